"""flash_attn_vec: against the exact reference within the derived bound, against the
kernel-arithmetic reference within 1e-5 relative, and its invariants."""
import itertools
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fattn
from fattn import reference
from helpers import BF16, DTYPES, F16, F32, as64, decode_exact_bound

HEAD_DIMS = [32, 64, 128, 256, 512]
KV_LENS = [1, 31, 32, 33, 1000, 4097]
MODES = [("none", 0), ("causal", 0), ("sliding_window", 1), ("sliding_window", 100), ("sliding_window", 5000),
         ("sliding_window", 0)]


def matrix_cases():
    rng = np.random.default_rng(11)
    cases = []
    for idx, (d, kv_len) in enumerate(itertools.product(HEAD_DIMS, KV_LENS)):
        for dtype in DTYPES:
            h_kv, group = [(1, 1), (2, 2), (1, 4), (2, 8)][int(rng.integers(4))]
            cases.append(dict(d=d, kv_len=kv_len, capacity=kv_len + int(rng.integers(1, 40)), dtype=dtype,
                              h=h_kv * group, h_kv=h_kv, batched=bool(rng.integers(2)),
                              mode=MODES[int(rng.integers(len(MODES)))],
                              softcap=[0.0, 0.0, 2.5, 30.0][int(rng.integers(4))],
                              nwg=[1, 3, 32, 64][int(rng.integers(4))]))
    return cases


def case_id(c):
    return (f"D{c['d']}-kv{c['kv_len']}-cap{c['capacity']}-{np.dtype(c['dtype']).name}-H{c['h']}x{c['h_kv']}-"
            f"{'B2' if c['batched'] else 'noB'}-{c['mode'][0]}{c['mode'][1]}-cap{c['softcap']}-nwg{c['nwg']}")


def make(rng, c):
    lead = (2,) if c["batched"] else ()
    q = rng.standard_normal(lead + (c["h"], c["d"])).astype(np.float32)
    k = rng.standard_normal(lead + (c["h_kv"], c["capacity"], c["d"])).astype(c["dtype"])
    v = rng.standard_normal(lead + (c["h_kv"], c["capacity"], c["d"])).astype(c["dtype"])
    return q, k, v


def exact_attention(q, k, v, kv_len, window, softcap):
    q4 = q[..., None, :] if q.ndim == 3 else q[None, :, None, :]
    k4, v4 = (x[..., :kv_len, :] if q.ndim == 3 else x[None, :, :kv_len, :] for x in (k, v))
    out = reference.attention(q4, k4, v4, causal="bottom_right", window=window or None, softcap=softcap)
    return out[:, :, 0] if q.ndim == 3 else out[0, :, 0]


@pytest.mark.parametrize("c", matrix_cases(), ids=case_id)
def test_matrix_against_both_references(c):
    rng = np.random.default_rng(zlib.crc32(case_id(c).encode()))
    q, k, v = make(rng, c)
    mode, window = c["mode"]
    kw = dict(kv_seq_len=c["kv_len"], mask=mode, window=window, softcap=c["softcap"], nwg=c["nwg"])
    out = fattn.flash_attn_vec(q, k, v, **kw)
    assert out.dtype == np.float32 and out.shape == q.shape and not np.isnan(out).any()
    effective_window = window if mode == "sliding_window" else 0
    exact = exact_attention(q, k, v, c["kv_len"], effective_window, c["softcap"])
    bound = decode_exact_bound(q, k, v, kv_seq_len=c["kv_len"], window=effective_window, softcap=c["softcap"])
    err = np.abs(as64(out) - exact)
    assert (err <= bound).all(), f"max err {err.max():.3g}, worst err/bound {(err / bound).max():.3g}"
    assert err.max() <= 1e-3 * np.abs(exact).max()  # the "~1e-3 of max|output|"
    model = reference.flash_attn_vec(q, k, v, **kw)
    assert np.abs(out - model).max() <= 1e-5 * np.abs(model).max()


@pytest.mark.parametrize("isa", fattn.available_isas(include_emulated=True))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_partials_then_reduce_is_the_same_bits(rng, dtype, isa):
    # flash_attn_vec neither writes nor reads the groups a short cache leaves
    # idle; the reduce of the full partials must still give its bits.
    q = rng.standard_normal((2, 8, 256)).astype(np.float32)
    k, v = (rng.standard_normal((2, 4, 700, 256)).astype(dtype) for _ in range(2))
    saved = fattn.build_info()["isa"]
    fattn.set_isa(isa)
    try:
        for nwg, kv_len in itertools.product((1, 3, 32, 64), (1, 33, 650)):
            kw = dict(kv_seq_len=kv_len, mask="sliding_window", window=300, nwg=nwg)
            whole = fattn.flash_attn_vec(q, k, v, **kw)
            o, s, m = fattn.flash_attn_vec_partials(q, k, v, **kw)
            assert o.shape == (2, 8, nwg, 256) and s.shape == m.shape == (2, 8, nwg)
            assert (fattn.flash_attn_vec_reduce(o, s, m).view(np.uint32) == whole.view(np.uint32)).all()
            mo, ms, mm = reference.flash_attn_vec_partials(q, k, v, **kw)
            assert np.allclose(s, ms, rtol=1e-5) and np.allclose(m, mm, rtol=1e-5, atol=1e-5)
    finally:
        fattn.set_isa(saved)


def test_unbatched_shapes_and_partials(rng):
    q = rng.standard_normal((4, 64)).astype(np.float32)
    k, v = (rng.standard_normal((2, 50, 64)).astype(F16) for _ in range(2))
    out = fattn.flash_attn_vec(q, k, v, kv_seq_len=50)
    o, s, m = fattn.flash_attn_vec_partials(q, k, v, kv_seq_len=50, nwg=4)
    assert out.shape == (4, 64) and o.shape == (4, 4, 64) and s.shape == (4, 4)
    batched = fattn.flash_attn_vec(q[None], k[None], v[None], kv_seq_len=50)
    assert (batched[0] == out).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_in_unused_capacity_changes_nothing(rng, dtype):
    q = rng.standard_normal((2, 4, 128)).astype(np.float32)
    k, v = (rng.standard_normal((2, 2, 100, 128)).astype(dtype) for _ in range(2))
    for kv_len in (1, 33, 64, 70):  # chunk-aligned and not
        clean = fattn.flash_attn_vec(q, k, v, kv_seq_len=kv_len)
        dirty_k, dirty_v = k.copy(), v.copy()
        dirty_k[:, :, kv_len:] = np.nan
        dirty_v[:, :, kv_len:] = np.inf
        assert (fattn.flash_attn_vec(q, dirty_k, dirty_v, kv_seq_len=kv_len).view(np.uint32)
                == clean.view(np.uint32)).all()


def test_window_modes_as_documented(rng):
    q = rng.standard_normal((2, 64)).astype(np.float32)
    k, v = (rng.standard_normal((1, 90, 64)).astype(F32) for _ in range(2))
    full = fattn.flash_attn_vec(q, k, v, kv_seq_len=80)
    # causal adds nothing for the decode query; window 0 or longer than the cache keeps everything
    for kw in (dict(mask="causal"), dict(mask="sliding_window", window=0), dict(mask="sliding_window", window=80),
               dict(mask="sliding_window", window=10 ** 6), dict(mask="none", window=5)):
        assert (fattn.flash_attn_vec(q, k, v, kv_seq_len=80, **kw) == full).all(), kw
    # window 1: only the last position -> exactly its V row (weight 1)
    last = fattn.flash_attn_vec(q, k, v, kv_seq_len=80, mask="sliding_window", window=1)
    assert np.allclose(last, np.broadcast_to(v[0, 79], (2, 64)), rtol=1e-6, atol=1e-7)
    w = fattn.flash_attn_vec(q, k, v, kv_seq_len=80, mask="sliding_window", window=17)
    same = fattn.flash_attn_vec(q, k[:, 63:], v[:, 63:], kv_seq_len=17)
    assert np.allclose(w, same, rtol=1e-5, atol=1e-6)


def test_softcap_bounds_the_scores(rng):
    q = (rng.standard_normal((1, 64)) * 30).astype(np.float32)
    k, v = (rng.standard_normal((1, 40, 64)).astype(F32) for _ in range(2))
    capped = fattn.flash_attn_vec(q, k, v, kv_seq_len=40, softcap=1.0)
    plain = fattn.flash_attn_vec(q, k, v, kv_seq_len=40)
    exact = exact_attention(q, k, v, 40, 0, 1.0)
    assert np.abs(capped - exact).max() < 1e-3 and np.abs(plain - exact).max() > 1e-2


@pytest.mark.parametrize("nwg", [1, 3, 32, 64])
def test_thread_count_does_not_change_bits(rng, restore_threads, nwg):
    q = rng.standard_normal((2, 8, 256)).astype(np.float32)
    k, v = (rng.standard_normal((2, 2, 3000, 256)).astype(F16) for _ in range(2))
    fattn.set_num_threads(1)
    one = fattn.flash_attn_vec(q, k, v, kv_seq_len=2999, nwg=nwg)
    fattn.set_num_threads(2)
    assert (fattn.flash_attn_vec(q, k, v, kv_seq_len=2999, nwg=nwg).view(np.uint32) == one.view(np.uint32)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_merge_of_two_halves_equals_the_whole(rng, dtype):
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((2, 4, 30, 64), (2, 2, 90, 64), (2, 2, 90, 64)))
    whole, whole_lse = reference.attention(q, k, v, return_lse=True)
    parts = [fattn.flash_attn_prefill(q, k[:, :, a:b], v[:, :, a:b], return_lse=True) for a, b in ((0, 41), (41, 90))]
    merged, lse = fattn.merge_attention([p[0] for p in parts], [p[1] for p in parts], return_lse=True)
    direct, direct_lse = fattn.flash_attn_prefill(q, k, v, return_lse=True)
    assert merged.dtype == np.float32 and merged.shape == q.shape and lse.shape == (2, 4, 30)
    # f32 rounding of the merge on top of each part's own error: the merge adds a few f32 ulps of max|out|.
    scale = np.abs(as64(direct)).max()
    if dtype == F32:
        assert np.abs(merged - direct).max() <= 1e-6 * scale
        assert np.abs(lse - direct_lse).max() <= 1e-5
    else:  # each part was rounded to the I/O dtype before merging
        assert np.abs(merged - as64(direct)).max() <= 2 ** -7 * scale
    assert np.abs(lse - whole_lse).max() <= 0.05


def test_merge_handles_empty_sets_and_ordering(rng):
    o1, o2 = rng.standard_normal((2, 3, 8)).astype(np.float32)
    l1 = np.array([0.5, -np.inf, -np.inf], np.float32)
    l2 = np.array([-np.inf, 1.0, -np.inf], np.float32)
    out, lse = fattn.merge_attention([o1, o2], [l1, l2], return_lse=True)
    assert (out[0] == o1[0]).all() and (out[1] == o2[1]).all() and (out[2] == 0).all()
    assert lse[0] == np.float32(0.5) and lse[1] == np.float32(1.0) and np.isneginf(lse[2])
    single = fattn.merge_attention([o1], [np.zeros(3, np.float32)])
    assert (single == o1).all()
    a = fattn.merge_attention([o1, o2], [np.zeros(3, np.float32), np.zeros(3, np.float32)])
    assert np.allclose(a, (o1 + o2) / 2, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(h_kv=st.integers(1, 2), group=st.sampled_from([1, 2, 4]), d=st.sampled_from([32, 64, 96]),
       kv_len=st.integers(1, 300), spare=st.integers(0, 40), nwg=st.integers(1, 64),
       mode=st.sampled_from(["none", "causal", "sliding_window"]), window=st.integers(0, 320),
       softcap=st.sampled_from([0.0, 3.0]), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2 ** 32 - 1))
def test_property_any_configuration_within_bound(h_kv, group, d, kv_len, spare, nwg, mode, window, softcap, dtype,
                                                 seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((h_kv * group, d)).astype(np.float32)
    k, v = (rng.standard_normal((h_kv, kv_len + spare, d)).astype(dtype) for _ in range(2))
    out = fattn.flash_attn_vec(q, k, v, kv_seq_len=kv_len, mask=mode, window=window, softcap=softcap, nwg=nwg)
    w = window if mode == "sliding_window" else 0
    exact = exact_attention(q, k, v, kv_len, w, softcap)
    assert (np.abs(as64(out) - exact) <= decode_exact_bound(q, k, v, kv_seq_len=kv_len, window=w,
                                                             softcap=softcap)).all()


@pytest.mark.parametrize("kv_len, mode, window, softcap", [(1, "none", 0, 0.0), (77, "none", 0, 0.0),
                                                           (1000, "sliding_window", 100, 0.0), (4097, "none", 0, 30.0)])
def test_return_lse_matches_the_exact_lse_and_merges(kv_len, mode, window, softcap):
    # The LSE is computed in float64 from the kernel's partials: against the exact LSE of the
    # same (float16-staged) query it is off only by the kernel's f32 scores and sums, well
    # inside 1e-5 * (1 + |lse|) at these sizes (docs/numerics.md §5, "LSE").
    rng = np.random.default_rng(kv_len)
    h, h_kv, d = 8, 2, 128
    q = rng.standard_normal((h, d)).astype(F32)
    k = rng.standard_normal((h_kv, kv_len + 3, d)).astype(F32)
    v = rng.standard_normal((h_kv, kv_len + 3, d)).astype(F32)
    kw = dict(kv_seq_len=kv_len, mask=mode, window=window, softcap=softcap)
    out, lse = fattn.flash_attn_vec(q, k, v, return_lse=True, **kw)
    assert out.dtype == F32 and lse.dtype == F32 and lse.shape == (h,)
    assert out.tobytes() == fattn.flash_attn_vec(q, k, v, **kw).tobytes()  # bits unchanged by return_lse
    q16 = q.astype(F16).astype(np.float64)
    first = kv_len - window if window and window < kv_len else 0
    _, ref_lse = reference.attention(q16[None, :, None], as64(k)[None, :, first:kv_len], as64(v)[None, :, first:kv_len],
                                     softcap=softcap, return_lse=True)
    ref_lse = ref_lse[0, :, 0]
    assert np.all(np.abs(lse - ref_lse) <= 1e-5 * (1 + np.abs(ref_lse))), np.abs(lse - ref_lse).max()
    if kv_len > 1 and mode == "none":  # two decodes over halves of the cache, merged, equal one over all
        a = kv_len // 3
        o1, l1 = fattn.flash_attn_vec(q, k[:, :a], v[:, :a], kv_seq_len=a, softcap=softcap, return_lse=True)
        o2, l2 = fattn.flash_attn_vec(q, k[:, a:kv_len], v[:, a:kv_len], kv_seq_len=kv_len - a, softcap=softcap,
                                      return_lse=True)
        merged, merged_lse = fattn.merge_attention([o1, o2], [l1, l2], return_lse=True)
        assert np.abs(merged - out).max() <= 1e-5 * np.abs(v).max()
        assert np.all(np.abs(merged_lse - lse) <= 1e-5 * (1 + np.abs(lse)))


@pytest.mark.parametrize("q_dtype", [F16, BF16], ids=["f16", "bf16"])
def test_half_precision_q_is_widened_exactly(q_dtype):
    # The kernel stages q to float16 itself; a half-precision q must give exactly what its
    # float32 widening gives (partials and LSE included).
    rng = np.random.default_rng(5)
    q = rng.standard_normal((2, 4, 64)).astype(q_dtype)
    k = rng.standard_normal((2, 2, 40, 64)).astype(F16)
    out, lse = fattn.flash_attn_vec(q, k, k, kv_seq_len=37, return_lse=True)
    want, want_lse = fattn.flash_attn_vec(q.astype(F32), k, k, kv_seq_len=37, return_lse=True)
    assert out.dtype == F32 and out.tobytes() == want.tobytes() and lse.tobytes() == want_lse.tobytes()
    parts = fattn.flash_attn_vec_partials(q, k, k, kv_seq_len=37)
    assert fattn.flash_attn_vec_reduce(*parts).tobytes() == want.tobytes()


# --- sinks and ring_start (issue 19) -----------------------------------------------------------

ALL_PATHS = fattn.available_isas(include_emulated=True)


def sink_values(rng, h):
    """One logit per head over the range that matters: near the scores, far above them (the
    sink takes nearly all the weight), far below, and -inf (no sink for that head)."""
    choices = np.array([0.0, 1.5, -2.0, 6.0, 40.0, -40.0, -np.inf], np.float32)
    return np.where(rng.uniform(size=h) < 0.5, rng.standard_normal(h) * 3, rng.choice(choices, h)).astype(np.float32)


def exact_with_sinks(q, k, v, kv_len, window, softcap, sinks):
    q4 = q[..., None, :] if q.ndim == 3 else q[None, :, None, :]
    k4, v4 = (x[..., :kv_len, :] if q.ndim == 3 else x[None, :, :kv_len, :] for x in (k, v))
    out = reference.attention(q4, k4, v4, causal="bottom_right", window=window or None, softcap=softcap, sinks=sinks)
    return out[:, :, 0] if q.ndim == 3 else out[0, :, 0]


def sink_cases():
    rng = np.random.default_rng(19)
    cases = []
    for d, kv_len in itertools.product([32, 64, 128, 256, 512], [1, 31, 33, 1000]):
        dtype = DTYPES[len(cases) % 3]
        h_kv, group = [(1, 1), (2, 2), (1, 4), (2, 4)][int(rng.integers(4))]
        cases.append(dict(d=d, kv_len=kv_len, capacity=kv_len + int(rng.integers(0, 40)), dtype=dtype,
                          h=h_kv * group, h_kv=h_kv, batched=bool(rng.integers(2)),
                          mode=MODES[int(rng.integers(len(MODES)))], softcap=[0.0, 0.0, 30.0][int(rng.integers(3))],
                          nwg=[1, 3, 32, 64][int(rng.integers(4))]))
    return cases


@pytest.mark.parametrize("c", sink_cases(), ids=case_id)
def test_sinks_against_both_references(c):
    rng = np.random.default_rng(zlib.crc32(("sinks" + case_id(c)).encode()))
    q, k, v = make(rng, c)
    sinks = sink_values(rng, c["h"])
    mode, window = c["mode"]
    kw = dict(kv_seq_len=c["kv_len"], mask=mode, window=window, softcap=c["softcap"], nwg=c["nwg"])
    out = fattn.flash_attn_vec(q, k, v, sinks=sinks, **kw)
    w = window if mode == "sliding_window" else 0
    exact = exact_with_sinks(q, k, v, c["kv_len"], w, c["softcap"], sinks)
    bound = decode_exact_bound(q, k, v, kv_seq_len=c["kv_len"], window=w, softcap=c["softcap"], sinks=sinks)
    err = np.abs(as64(out) - exact)
    assert (err <= bound).all(), f"max err {err.max():.3g}, worst err/bound {(err / bound).max():.3g}"
    model = reference.flash_attn_vec(q, k, v, sinks=sinks, **kw)
    assert np.abs(out - model).max() <= 1e-5 * np.abs(v.astype(np.float64)).max()
    # the sink matters: without it the answer is off by far more than the bound where a sink is large
    plain = fattn.flash_attn_vec(q, k, v, **kw)
    big = sinks >= 6.0
    if big.any():
        assert (np.abs(as64(plain) - exact)[..., big, :].max(axis=-1) > bound[..., big, :][..., 0]).any()


@pytest.mark.parametrize("isa", ALL_PATHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sinks_partials_then_reduce_is_the_same_bits(rng, restore_isa, dtype, isa):
    q = rng.standard_normal((2, 8, 128)).astype(np.float32)
    k, v = (rng.standard_normal((2, 2, 700, 128)).astype(dtype) for _ in range(2))
    sinks = sink_values(rng, 8)
    fattn.set_isa(isa)
    for nwg, kv_len, window in itertools.product((1, 3, 64), (1, 33, 650), (0, 40)):
        kw = dict(kv_seq_len=kv_len, mask="sliding_window", window=window, nwg=nwg)
        whole = fattn.flash_attn_vec(q, k, v, sinks=sinks, **kw)
        o, s, m = fattn.flash_attn_vec_partials(q, k, v, sinks=sinks, **kw)
        assert fattn.flash_attn_vec_reduce(o, s, m).tobytes() == whole.tobytes()
        # the sink sits in group 0 only; the other groups are the sink-free partials
        o0, s0, m0 = fattn.flash_attn_vec_partials(q, k, v, **kw)
        for got, plain in ((o, o0), (s, s0), (m, m0)):
            assert got[:, :, 1:].tobytes() == plain[:, :, 1:].tobytes()
        none = np.isneginf(sinks)
        assert s[:, none, 0].tobytes() == s0[:, none, 0].tobytes()
        assert (s[:, ~none, 0] != s0[:, ~none, 0]).any()
        mo, ms, mm = reference.flash_attn_vec_partials(q, k, v, sinks=sinks, **kw)
        assert np.allclose(s, ms, rtol=1e-5) and np.allclose(m, mm, rtol=1e-5, atol=1e-5)


def test_sinks_of_minus_inf_change_no_bit(rng):
    q = rng.standard_normal((2, 4, 64)).astype(np.float32)
    k, v = (rng.standard_normal((2, 2, 90, 64)).astype(F16) for _ in range(2))
    kw = dict(kv_seq_len=77, nwg=3)
    plain = fattn.flash_attn_vec(q, k, v, **kw)
    none = np.full(4, -np.inf, np.float32)
    assert fattn.flash_attn_vec(q, k, v, sinks=none, **kw).tobytes() == plain.tobytes()
    for a, b in zip(fattn.flash_attn_vec_partials(q, k, v, sinks=none, **kw), fattn.flash_attn_vec_partials(q, k, v, **kw)):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("kv_len, nwg, window", [(1000, 64, 100), (1000, 2, 8), (40, 64, 5), (1, 64, 0),
                                                 (5, 1, 1)])
def test_sink_reaches_group_0_without_a_chunk(rng, kv_len, nwg, window):
    # (1000, 64, 100): group 0's only chunk (positions 0-31) lies before the window and is
    # skipped; (1000, 2, 8): so do all of group 0's chunks (the even ones; the window is chunk
    # 31's); short caches leave most groups idle (flash_attn_vec neither writes nor reads
    # them). Group 0 must still take the sink.
    q = rng.standard_normal((4, 64)).astype(np.float32)
    k, v = (rng.standard_normal((2, kv_len, 64)).astype(F32) for _ in range(2))
    sinks = np.array([0.0, 2.0, -np.inf, 8.0], np.float32)
    kw = dict(kv_seq_len=kv_len, mask="sliding_window", window=window, nwg=nwg)
    out = fattn.flash_attn_vec(q, k, v, sinks=sinks, **kw)
    exact = exact_with_sinks(q, k, v, kv_len, window, 0.0, sinks)
    bound = decode_exact_bound(q, k, v, kv_seq_len=kv_len, window=window, sinks=sinks)
    assert (np.abs(as64(out) - exact) <= bound).all()
    o, s, m = fattn.flash_attn_vec_partials(q, k, v, sinks=sinks, **kw)
    assert fattn.flash_attn_vec_reduce(o, s, m).tobytes() == out.tobytes()
    assert m[3, 0] >= 8.0 and s[3, 0] >= 1.0  # group 0 holds the sink's term


@pytest.mark.parametrize("kv_len, mode, window", [(77, "none", 0), (1000, "sliding_window", 100)])
def test_return_lse_with_sinks_is_the_keys_lse(rng, kv_len, mode, window):
    q = rng.standard_normal((8, 128)).astype(F32)
    k, v = (rng.standard_normal((2, kv_len + 3, 128)).astype(F16) for _ in range(2))
    sinks = sink_values(rng, 8)
    kw = dict(kv_seq_len=kv_len, mask=mode, window=window)
    out, lse = fattn.flash_attn_vec(q, k, v, sinks=sinks, return_lse=True, **kw)
    assert out.tobytes() == fattn.flash_attn_vec(q, k, v, sinks=sinks, **kw).tobytes()
    _, plain_lse = fattn.flash_attn_vec(q, k, v, return_lse=True, **kw)
    assert lse.tobytes() == plain_lse.tobytes()


def rolled(x, r):
    return np.ascontiguousarray(np.roll(x, r, axis=-2))


@pytest.mark.parametrize("isa", ALL_PATHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ring_start_on_a_rolled_cache_is_the_same_bits(rng, restore_isa, dtype, isa):
    # np.roll by r moves slot i to i + r, so logical position p sits at slot (r + p) % capacity:
    # ring_start = r. Shifts put the ring's end at a chunk start, inside a chunk and inside a
    # block of 8 or 16 rows; kv_seq_len = capacity uses every slot.
    fattn.set_isa(isa)
    for d, h, h_kv, capacity, kv_len in [(64, 8, 2, 300, 290), (256, 4, 1, 130, 130), (96, 2, 2, 75, 40),
                                         (512, 4, 4, 64, 33)]:
        q = rng.standard_normal((2, h, d)).astype(np.float32)
        k, v = (rng.standard_normal((2, h_kv, capacity, d)).astype(dtype) for _ in range(2))
        sinks = sink_values(rng, h)
        for r, nwg, kw in itertools.product(sorted({0, 1, 7, 13, 32, capacity - 1, capacity // 2}), (1, 3, 64),
                                            (dict(), dict(mask="sliding_window", window=37),
                                             dict(softcap=5.0, sinks=sinks))):
            want = fattn.flash_attn_vec(q, k, v, kv_seq_len=kv_len, nwg=nwg, **kw)
            kr, vr = rolled(k, r), rolled(v, r)
            got = fattn.flash_attn_vec(q, kr, vr, kv_seq_len=kv_len, nwg=nwg, ring_start=r, **kw)
            assert got.tobytes() == want.tobytes(), (d, capacity, kv_len, r, nwg, kw.keys())
            parts = fattn.flash_attn_vec_partials(q, kr, vr, kv_seq_len=kv_len, nwg=nwg, ring_start=r, **kw)
            assert fattn.flash_attn_vec_reduce(*parts).tobytes() == want.tobytes()


def test_ring_start_reads_only_the_valid_slots(rng):
    # The slots after logical position kv_seq_len - 1 (i.e. from (ring_start + kv_seq_len) %
    # capacity up to ring_start) may hold anything.
    q = rng.standard_normal((4, 64)).astype(np.float32)
    k, v = (rng.standard_normal((2, 100, 64)).astype(F16) for _ in range(2))
    want = fattn.flash_attn_vec(q, k, v, kv_seq_len=70)
    for r in (0, 31, 60, 99):
        kr, vr = rolled(k, r), rolled(v, r)
        unused = (r + np.arange(70, 100)) % 100
        kr[:, unused], vr[:, unused] = np.nan, np.inf
        for isa in ALL_PATHS:
            fattn.set_isa(isa)
            try:
                got = fattn.flash_attn_vec(q, kr, vr, kv_seq_len=70, ring_start=r)
            finally:
                fattn.set_isa("auto")
            assert got.tobytes() == want.tobytes(), (r, isa)


def test_ring_start_reference_follows_the_slots(rng):
    q = rng.standard_normal((2, 4, 64)).astype(np.float32)
    k, v = (rng.standard_normal((2, 2, 50, 64)).astype(F32) for _ in range(2))
    kw = dict(kv_seq_len=45, mask="sliding_window", window=20, nwg=3)
    for r in (0, 5, 49):
        got = reference.flash_attn_vec(q, rolled(k, r), rolled(v, r), ring_start=r, **kw)
        assert got.tobytes() == reference.flash_attn_vec(q, k, v, **kw).tobytes()
        # and a wrong ring_start reads other positions: the test can fail
        assert not np.array_equal(fattn.flash_attn_vec(q, rolled(k, r), rolled(v, r), ring_start=(r + 1) % 50, **kw),
                                  fattn.flash_attn_vec(q, k, v, **kw))


# --- merge_attention with sinks -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_merge_with_sinks_of_a_prefill_split_equals_attention_with_sinks(rng, dtype):
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((2, 4, 30, 64), (2, 2, 90, 64), (2, 2, 90, 64)))
    sinks = sink_values(rng, 4)
    exact = reference.attention(q, k, v, sinks=sinks)
    # float64 parts: only the merge's own f32 error (and the parts' f32 rounding) remains
    parts64 = [reference.attention(q, k[:, :, a:b], v[:, :, a:b], return_lse=True) for a, b in ((0, 41), (41, 90))]
    outs = [p[0].astype(F32) for p in parts64]
    lses = [p[1].astype(F32) for p in parts64]
    merged, lse = fattn.merge_attention(outs, lses, sinks=sinks, return_lse=True)
    scale = np.abs(as64(v)).max()
    assert np.abs(merged - exact).max() <= 1e-6 * scale
    # the LSE stays the keys' (bit for bit what the merge without sinks gives)
    assert lse.tobytes() == fattn.merge_attention(outs, lses, return_lse=True)[1].tobytes()
    # fattn's prefill parts: within the prefill's own error
    parts = [fattn.flash_attn_prefill(q, k[:, :, a:b], v[:, :, a:b], return_lse=True) for a, b in ((0, 41), (41, 90))]
    merged = fattn.merge_attention([p[0] for p in parts], [p[1] for p in parts], sinks=sinks)
    assert np.abs(merged - exact).max() <= (1e-5 if dtype == F32 else 2 ** -7) * scale
    # blhd: the head axis is 2
    outs_t = [np.ascontiguousarray(o.transpose(0, 2, 1, 3)) for o in outs]
    lses_t = [np.ascontiguousarray(x.transpose(0, 2, 1)) for x in lses]
    merged_t = fattn.merge_attention(outs_t, lses_t, sinks=sinks, head_axis=2)
    assert merged_t.transpose(0, 2, 1, 3).tobytes() == fattn.merge_attention(outs, lses, sinks=sinks).tobytes()


@pytest.mark.parametrize("batched", [False, True])
def test_merge_with_sinks_of_decode_results_equals_flash_attn_vec_with_sinks(rng, batched):
    lead = (2,) if batched else ()
    q = rng.standard_normal(lead + (8, 128)).astype(F32)
    k, v = (rng.standard_normal(lead + (2, 500, 128)).astype(F16) for _ in range(2))
    sinks = sink_values(rng, 8)
    want = fattn.flash_attn_vec(q, k, v, kv_seq_len=500, sinks=sinks)
    a = 173
    o1, l1 = fattn.flash_attn_vec(q, k[..., :a, :], v[..., :a, :], kv_seq_len=a, return_lse=True)
    o2, l2 = fattn.flash_attn_vec(q, k[..., a:, :], v[..., a:, :], kv_seq_len=500 - a, return_lse=True)
    merged = fattn.merge_attention([o1, o2], [l1, l2], sinks=sinks)
    assert np.abs(merged - want).max() <= 1e-5 * np.abs(as64(v)).max()
    exact = exact_with_sinks(q, k, v, 500, 0, 0.0, sinks)
    bound = decode_exact_bound(q, k, v, kv_seq_len=500, sinks=sinks)
    assert (np.abs(as64(merged) - exact) <= bound).all()
    # merges compose: the sink applied once, at the last merge
    o3, l3 = fattn.merge_attention([o1, o2], [l1, l2], return_lse=True)
    again = fattn.merge_attention([o3], [l3], sinks=sinks)
    assert np.abs(again - merged).max() <= 1e-6 * np.abs(as64(v)).max()
