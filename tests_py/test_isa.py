"""Every kernel path this CPU has gives the scalar model's bits, for every kernel and option."""
import itertools

import numpy as np
import pytest

import fattn
from helpers import BF16, DTYPES, F16, F32

# The AVX-512 code runs emulated on AVX2 where the CPU has no AVX-512, so it is
# held to the scalar model on every machine with AVX2.
PATHS = [isa for isa in fattn.available_isas(include_emulated=True) if isa != "scalar"]


def bits(x):
    return np.ascontiguousarray(x).view(np.uint8)


def run_all_paths(fn):
    results = {}
    for isa in ["scalar"] + PATHS:
        fattn.set_isa(isa)
        results[isa] = fn()
    return results


PREFILL_CASES = list(itertools.product(
    DTYPES,
    [(64, "auto", None), (80, "auto", None), (128, "auto", None), (256, "auto", None), (512, "auto", None),
     (512, "llamacpp", None), (24, "auto", None), (33, "auto", None), (64, "auto", (16, 32)),
     (40, "auto", (4, 8))],
    ["none", "additive", "bool", "window_blk"],
    [False, True]))


@pytest.mark.skipif(not PATHS, reason="only the scalar path here (this CPU, or a build without FATTN_SIMD)")
@pytest.mark.parametrize("dtype, config, mask_kind, causal", PREFILL_CASES,
                         ids=[f"{np.dtype(c[0]).name}-D{c[1][0]}-{c[1][1]}-{c[1][2]}-{c[2]}-{c[3]}"
                              for c in PREFILL_CASES])
def test_prefill_paths_match_the_scalar_model(rng, restore_isa, dtype, config, mask_kind, causal):
    d, kernel, tiles = config
    q_tile, k_tile = tiles or (None, None)
    lq, lk = 45, 83
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((2, 4, lq, d), (2, 2, lk, d), (2, 2, lk, d)))
    mask = blk = None
    if mask_kind == "additive":
        mask = np.where(rng.random((2, 1, lq, lk)) < 0.3, -np.inf, rng.standard_normal((2, 1, lq, lk))).astype(dtype)
    elif mask_kind == "bool":
        mask = rng.random((lq, lk)) < 0.6
    elif mask_kind == "window_blk":
        i, j = np.arange(lq)[:, None], np.arange(lk)[None, :]
        mask = np.where((j <= i + 20) & (j > i - 20), 0.0, -np.inf).astype(np.float32)
        blk = fattn.flash_attn_prefill_blk(mask, head_dim=d, kernel=kernel, q_tile=q_tile, k_tile=k_tile)
    results = run_all_paths(lambda: fattn.flash_attn_prefill(
        q, k, v, mask, causal=causal, kernel=kernel, blk=blk, return_lse=True, q_tile=q_tile, k_tile=k_tile))
    for isa in PATHS:
        assert (bits(results[isa][0]) == bits(results["scalar"][0])).all(), isa
        assert (bits(results[isa][1]) == bits(results["scalar"][1])).all(), isa


@pytest.mark.skipif(not PATHS, reason="only the scalar path here (this CPU, or a build without FATTN_SIMD)")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("lq", [1, 2, 4, 5, 8, 9, 16, 17, 24, 25, 32 + 3, 32 + 20])
@pytest.mark.parametrize("d", [64, 33, 200])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("k_tile", [None, 8])
def test_prefill_paths_match_on_short_row_blocks(rng, restore_isa, dtype, lq, d, causal, k_tile):
    # A block of fewer than 32 rows computes only the vectors that hold a row
    # (1 to 4 of 8 lanes on AVX2, 1 or 2 of 16 on AVX-512), with more keys
    # per score pass and more D elements per P·V pass; on AVX2 a block of at
    # most 4 rows takes the row-form P·V, with more D vectors per row the
    # fewer rows there are. Every count, each with a partial last vector, D
    # with a single element after the pairs or a partial last D vector, and
    # a mask with rows that see no key; k_tile=8 caps the keys per score
    # pass at the tile (a P·V batch then holds 8 tiles).
    lk = 70
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((1, 2, lq, d), (1, 1, lk, d), (1, 1, lk, d)))
    mask = rng.random((lq, lk)) < 0.7
    mask[0] = False
    results = run_all_paths(lambda: fattn.flash_attn_prefill(q, k, v, mask, causal=causal, return_lse=True,
                                                             k_tile=k_tile))
    for isa in PATHS:
        assert (bits(results[isa][0]) == bits(results["scalar"][0])).all(), isa
        assert (bits(results[isa][1]) == bits(results["scalar"][1])).all(), isa


@pytest.mark.skipif(not PATHS, reason="only the scalar path here (this CPU, or a build without FATTN_SIMD)")
def test_prefill_paths_match_on_non_finite_inputs(rng, restore_isa):
    q, k, v = (rng.standard_normal(s).astype(F32) for s in ((1, 2, 40, 64), (1, 2, 50, 64), (1, 2, 50, 64)))
    q[0, 0, 3, 5] = np.nan
    k[0, 1, 7, 2] = np.inf
    v[0, 0, 20, 9] = -np.inf
    results = run_all_paths(lambda: fattn.flash_attn_prefill(q, k, v, causal=True, return_lse=True))
    for isa in PATHS:
        assert (bits(results[isa][0]) == bits(results["scalar"][0])).all()


@pytest.mark.skipif(not PATHS, reason="only the scalar path here (this CPU, or a build without FATTN_SIMD)")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("d", [64, 33])
def test_prefill_paths_match_on_seq_major_strided_views(rng, restore_isa, dtype, d):
    # K and V rows reached through the view's strides: seq-major [B, L, H, D]
    # slices of larger arrays (rows H_kv * 2 * D apart, every other key), so
    # rows read in place are not adjacent and a bf16 row may start anywhere.
    q = rng.standard_normal((2, 37, 4, d)).astype(dtype)
    k, v = (rng.standard_normal((2, 2 * 70, 2, d + 1)).astype(dtype)[:, ::2, :, 1:] for _ in range(2))
    results = run_all_paths(lambda: fattn.flash_attn_prefill(q, k, v, layout="blhd", causal=True, return_lse=True))
    for isa in PATHS:
        assert (bits(results[isa][0]) == bits(results["scalar"][0])).all(), isa
        assert (bits(results[isa][1]) == bits(results["scalar"][1])).all(), isa


# (B, H, H_kv, Lq, kv_seq_len, capacity, D): row blocks of 32 with a ragged
# tail, Lq > kv_seq_len (rows that see no key), GQA, odd D.
SDPA_SHAPES = [(1, 1, 1, 1, 1, 1, 8), (1, 2, 1, 1, 37, 64, 16), (2, 4, 2, 7, 7, 7, 64), (1, 8, 2, 33, 100, 128, 128),
               (1, 2, 2, 10, 4, 6, 24), (1, 4, 1, 70, 300, 301, 40), (1, 2, 1, 45, 45, 45, 33),
               (1, 2, 2, 9, 50, 50, 512)]


@pytest.mark.skipif(not PATHS, reason="only the scalar path here (this CPU, or a build without FATTN_SIMD)")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("shape", SDPA_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_paths_match_the_scalar_model(rng, restore_isa, dtype, shape, causal):
    b, h, h_kv, lq, kv_len, cap, d = shape
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((b, h, lq, d), (b, h_kv, cap, d), (b, h_kv, cap, d)))
    results = run_all_paths(lambda: fattn.sdpa(q, k, v, causal=causal, kv_seq_len=kv_len))
    for isa in PATHS:
        assert (bits(results[isa]) == bits(results["scalar"])).all(), isa


# (softcap, window, sinks): the options alone and together; windows that start
# inside a block of 32 rows (lanes masked) and windows of 1.
SDPA_OPTIONS = [(2.5, None, None), (0.0, 1, None), (0.0, 9, None), (0.0, None, "sinks"), (0.0, None, "some -inf"),
                (2.5, 5, "sinks"), (0.7, 30, "some -inf")]


@pytest.mark.skipif(not PATHS, reason="only the scalar path here (this CPU, or a build without FATTN_SIMD)")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("shape", SDPA_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("options", SDPA_OPTIONS, ids=lambda o: f"cap{o[0]}-w{o[1]}-{o[2]}")
@pytest.mark.parametrize("align", ["bottom_right", "top_left"])
def test_sdpa_options_paths_match_the_scalar_model(rng, restore_isa, dtype, shape, options, align):
    b, h, h_kv, lq, kv_len, cap, d = shape
    softcap, window, sink_kind = options
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((b, h, lq, d), (b, h_kv, cap, d), (b, h_kv, cap, d)))
    q = (q.astype(np.float32) * 3).astype(dtype)  # scores of a few units: the softcap's tanh takes both branches
    sinks = None
    if sink_kind:
        sinks = (rng.standard_normal(h) * 2).astype(np.float32)
        if sink_kind == "some -inf":
            sinks[::2] = -np.inf
    results = run_all_paths(lambda: fattn.sdpa(q, k, v, causal=align, kv_seq_len=kv_len, softcap=softcap,
                                               window=window, sinks=sinks))
    for isa in PATHS:
        assert (bits(results[isa]) == bits(results["scalar"])).all(), isa


def window_range(align, lq, kv_len, window):
    """Each row's keys [first, end) under a causal alignment and a window."""
    offset = kv_len - lq if align in (True, "bottom_right") else 0
    after = offset + np.arange(lq) + 1
    return np.clip(after - window, 0, kv_len), np.clip(after, 0, kv_len)


@pytest.mark.skipif(not PATHS, reason="only the scalar path here (this CPU, or a build without FATTN_SIMD)")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("align", ["bottom_right", "top_left"])
@pytest.mark.parametrize("lq, kv_len, window", [(45, 60, 7), (40, 33, 3), (70, 70, 1), (5, 100, 40), (37, 50, 64)])
@pytest.mark.parametrize("softcap, with_sinks", [(0.0, False), (2.0, True)])
def test_window_skips_keys_with_the_bits_of_masking_them(rng, restore_isa, dtype, align, lq, kv_len, window,
                                                         softcap, with_sinks):
    """A windowed call gives each row exactly the bits of that row alone, non-causal, against
    only its window's keys. On the SIMD paths a block of rows visits the union of its rows'
    windows with the keys outside a row's window masked (its state kept), so this holds
    skipping (the scalar model) and masking to each other, on every path."""
    h, d = 4, 24
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((1, h, lq, d), (1, 2, kv_len, d), (1, 2, kv_len, d)))
    sinks = rng.standard_normal(h).astype(np.float32) if with_sinks else None
    first, end = window_range(align, lq, kv_len, window)
    for isa in ["scalar"] + PATHS:
        fattn.set_isa(isa)
        out = fattn.sdpa(q, k, v, causal=align, window=window, softcap=softcap, sinks=sinks)
        for i in range(lq):
            if first[i] == end[i]:  # the row sees no key
                alone = np.zeros((1, h, 1, d), dtype)
            else:
                alone = fattn.sdpa(q[:, :, i:i + 1], k[:, :, first[i]:end[i]], v[:, :, first[i]:end[i]],
                                   causal=False, softcap=softcap, sinks=sinks)
            assert (bits(out[:, :, i:i + 1]) == bits(alone)).all(), (isa, i)


def test_set_isa_rejects_unknown_names(restore_isa):
    with pytest.raises(ValueError, match="isa: must be 'scalar', 'avx2', .* got 'neon'"):
        fattn.set_isa("neon")
    with pytest.raises(TypeError):
        fattn.set_isa(3)
    with pytest.raises(TypeError, match="include_emulated"):
        fattn.available_isas(include_emulated=1)


def test_set_isa_refuses_paths_this_build_or_cpu_cannot_run(restore_isa):
    # No silent fallback: a path not compiled in (FATTN_SIMD off) or beyond the CPU is an error.
    runnable = fattn.available_isas(include_emulated=True)
    for name in ["avx2", "avx512_256", "avx512", "avx512_bf16", "avx512_emulated", "avx512_256_emulated",
                 "avx512_bf16_emulated"]:
        if name not in runnable:
            fattn.set_isa("scalar")
            with pytest.raises(ValueError, match=f"isa: this (build has no|CPU cannot run) '{name}'"):
                fattn.set_isa(name)
            assert fattn.build_info()["isa"] == "scalar"
    for name in runnable:
        fattn.set_isa(name)
        assert fattn.build_info()["isa"] == name


def test_emulated_path_is_listed_only_on_request():
    assert not any(name.endswith("_emulated") for name in fattn.available_isas())
    with_emulated = fattn.available_isas(include_emulated=True)
    assert with_emulated[:len(fattn.available_isas())] == fattn.available_isas()
    for twin in ("avx512_emulated", "avx512_256_emulated", "avx512_bf16_emulated"):
        assert (twin in with_emulated) == ("avx2" in fattn.available_isas())
    fattn.set_isa("scalar")
    assert fattn.build_info()["isa"] == "scalar"


# Sinks (one -inf: no sink for that head; one far above every score) and a ring
# whose end falls inside a chunk, with the window reaching across it.
_SINKS8 = np.array([0.5, -np.inf, 3.0, -2.0, 40.0, -30.0, 0.0, 1.5], np.float32)
DECODE_CASES = list(itertools.product(DTYPES, [32, 96, 256, 512], [1, 3, 32, 64],
                                      [dict(), dict(mask="sliding_window", window=100), dict(softcap=3.0),
                                       dict(sinks=_SINKS8), dict(ring_start=333, mask="sliding_window", window=500)]))


@pytest.mark.skipif(not PATHS, reason="only the scalar path here (this CPU, or a build without FATTN_SIMD)")
@pytest.mark.parametrize("dtype, d, nwg, kw", DECODE_CASES,
                         ids=[f"{np.dtype(c[0]).name}-D{c[1]}-nwg{c[2]}-{sorted(c[3])}" for c in DECODE_CASES])
def test_decode_paths_match_the_scalar_model(rng, restore_isa, dtype, d, nwg, kw):
    q = rng.standard_normal((2, 8, d)).astype(np.float32)
    k, v = (rng.standard_normal((2, 2, 700, d)).astype(dtype) for _ in range(2))
    results = run_all_paths(lambda: fattn.flash_attn_vec_partials(q, k, v, kv_seq_len=650, nwg=nwg, **kw))
    for isa in PATHS:
        for got, want in zip(results[isa], results["scalar"]):
            assert (bits(got) == bits(want)).all(), isa


@pytest.mark.skipif(not PATHS, reason="only the scalar path here (this CPU, or a build without FATTN_SIMD)")
@pytest.mark.parametrize("heads, kv_heads, d", [(1, 1, 64), (3, 1, 160), (6, 2, 32), (16, 1, 128)])
def test_decode_paths_match_for_any_group_size_and_non_finite_inputs(rng, restore_isa, heads, kv_heads, d):
    # Group sizes that do not fill the paths' head tiles, D that leaves a part
    # segment of transposed planes, and NaN/inf in q, k and v.
    q = rng.standard_normal((1, heads, d)).astype(np.float32)
    k, v = (rng.standard_normal((1, kv_heads, 300, d)).astype(np.float16) for _ in range(2))
    q[0, 0, 1] = np.nan if heads > 1 else 0.0
    k[0, 0, 40, 3] = np.inf
    v[0, 0, 70, 5] = -np.inf
    k[0, 0, 41, :] = -0.0
    results = run_all_paths(lambda: fattn.flash_attn_vec_partials(q, k, v, kv_seq_len=290, nwg=5))
    for isa in PATHS:
        for got, want in zip(results[isa], results["scalar"]):
            assert (bits(got) == bits(want)).all(), isa


@pytest.mark.skipif(not PATHS, reason="only the scalar path here (this CPU, or a build without FATTN_SIMD)")
@pytest.mark.parametrize("kv_len, nwg", [(1, 1), (1, 32), (40, 8), (95, 64), (200, 7)])
@pytest.mark.parametrize("window", [0, 40])
def test_decode_paths_match_on_short_caches(rng, restore_isa, kv_len, nwg, window):
    # Fewer chunks than groups: the groups past the cache's end write the
    # empty partials (O = 0, S = 0, M = the initial max) without a state;
    # with a window, groups whose chunks all end before it keep that state too.
    q = rng.standard_normal((2, 4, 64)).astype(np.float32)
    k, v = (rng.standard_normal((2, 2, 210, 64)).astype(np.float16) for _ in range(2))
    results = run_all_paths(lambda: fattn.flash_attn_vec_partials(
        q, k, v, kv_seq_len=kv_len, nwg=nwg, mask="sliding_window", window=window))
    for isa in PATHS:
        for got, want in zip(results[isa], results["scalar"]):
            assert (bits(got) == bits(want)).all(), isa


@pytest.mark.skipif(not PATHS, reason="only the scalar path here (this CPU, or a build without FATTN_SIMD)")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
def test_decode_paths_match_when_every_score_ties(rng, restore_isa, dtype):
    # A zero query gives every position the score +0 (and a zero K row
    # gives one -0 product sum): the vector paths' chunk max must pick the
    # scalar model's value, the case where lane order could matter.
    q = rng.standard_normal((1, 4, 64)).astype(np.float32)
    q[0, 0] = 0.0
    q[0, 2] = -0.0
    k, v = (rng.standard_normal((1, 2, 100, 64)).astype(dtype) for _ in range(2))
    k[0, 1, 10] = -0.0
    for window in (0, 70):
        results = run_all_paths(lambda: fattn.flash_attn_vec_partials(
            q, k, v, kv_seq_len=100, nwg=3, mask="sliding_window", window=window))
        for isa in PATHS:
            for got, want in zip(results[isa], results["scalar"]):
                assert (bits(got) == bits(want)).all(), isa


@pytest.mark.skipif(not PATHS, reason="only the scalar path here (this CPU, or a build without FATTN_SIMD)")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("layout", ["seq_major", "every_third_position", "negative_position_step"])
def test_decode_paths_match_on_strided_caches(rng, restore_isa, dtype, layout):
    # The vector paths address K rows by the position stride (and pad the
    # cache's last, partial block of positions): caches that are views with
    # other strides give the bits of their contiguous copies on every path.
    d, kv_len = 96, 203  # 203 = 25 blocks of 8 positions + 3
    q = rng.standard_normal((2, 4, d)).astype(np.float32)
    if layout == "seq_major":
        k, v = (rng.standard_normal((2, 240, 2, d)).astype(dtype).swapaxes(1, 2) for _ in range(2))
    elif layout == "every_third_position":
        k, v = (rng.standard_normal((2, 2, 720, d)).astype(dtype)[:, :, ::3] for _ in range(2))
    else:
        k, v = (rng.standard_normal((2, 2, 240, d)).astype(dtype)[:, :, ::-1] for _ in range(2))
    results = run_all_paths(lambda: fattn.flash_attn_vec_partials(q, k, v, kv_seq_len=kv_len, nwg=7))
    copies = run_all_paths(lambda: fattn.flash_attn_vec_partials(
        q, np.ascontiguousarray(k), np.ascontiguousarray(v), kv_seq_len=kv_len, nwg=7))
    for isa in ["scalar"] + PATHS:
        for got, want in zip(results[isa], copies["scalar"]):
            assert (bits(got) == bits(want)).all(), isa
