"""flash_attn_prefill against the exact reference (within the derived bound) and
against the kernel-arithmetic reference (within one ulp, almost always identical)."""
import itertools
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fattn
from fattn import reference
from helpers import BF16, DTYPES, F16, F32, as64, prefill_exact_bound, ulp, within_exact_bound

LENGTHS = [1, 7, 31, 32, 33, 100, 257, 1000]
HEAD_DIMS = [64, 80, 128, 256, 512]
GQA = [(2, 2), (4, 2), (4, 1), (8, 1)]  # (H, H_kv): ratios 1, 2, 4, 8
MASKS = ["none", "additive2", "bool4", "additive_bcast", "bool2", "additive4"]


def make_mask(rng, kind, b, h, lq, lk, dtype):
    if kind == "none":
        return None
    shape = {"additive2": (lq, lk), "bool2": (lq, lk), "bool4": (b, h, lq, lk), "additive4": (b, h, lq, lk),
             "additive_bcast": (1, h, 1, lk)}[kind]
    keep = rng.random(shape) > 0.3
    if kind.startswith("bool"):
        return keep
    bias = rng.standard_normal(shape) * 0.5
    return np.where(keep, bias, -np.inf).astype(dtype)


def matrix_cases():
    """Every (Lq, Lk) pair, the other factors dealt from seeded draws so that each
    value of each factor appears many times across the matrix."""
    rng = np.random.default_rng(3)
    cases = []
    for idx, (lq, lk) in enumerate(itertools.product(LENGTHS, LENGTHS)):
        d = HEAD_DIMS[idx % 5]
        h, h_kv = GQA[rng.integers(4)]
        batch = int(rng.integers(1, 4))
        if lq * lk * d * h * batch > 4e7:  # keep the scalar model's run time small
            h, h_kv, batch = (2, 1, 1) if rng.random() < 0.5 else (2, 2, 1)
        cases.append(dict(lq=lq, lk=lk, d=d, h=h, h_kv=h_kv, batch=batch, mask=MASKS[idx % 6],
                          causal=bool(rng.integers(2)), layout=["bhld", "blhd"][int(rng.integers(2))],
                          dtype=DTYPES[(idx // 2) % 3], strided=bool(rng.integers(2)),
                          kernel="llamacpp" if d == 512 and rng.random() < 0.5 else "auto"))
    return cases


def case_id(c):
    return (f"Lq{c['lq']}-Lk{c['lk']}-D{c['d']}-H{c['h']}x{c['h_kv']}-B{c['batch']}-{c['mask']}-"
            f"{'causal' if c['causal'] else 'full'}-{c['layout']}-{np.dtype(c['dtype']).name}-{c['kernel']}"
            f"{'-strided' if c['strided'] else ''}")


def inputs(rng, c):
    b, h, h_kv, lq, lk, d, dt = c["batch"], c["h"], c["h_kv"], c["lq"], c["lk"], c["d"], c["dtype"]
    shape = (lambda hh, ll: (b, hh, ll, d)) if c["layout"] == "bhld" else (lambda hh, ll: (b, ll, hh, d))
    q = rng.standard_normal(shape(h, lq)).astype(dt)
    k = rng.standard_normal(shape(h_kv, lk)).astype(dt)
    v = rng.standard_normal(shape(h_kv, lk)).astype(dt)
    if c["strided"]:  # the same values as views into bigger arrays
        big = np.zeros(q.shape[:-1] + (2 * d,), dtype=dt)
        big[..., d:] = q
        q = big[..., d:]
        big_k = np.zeros((2,) + k.shape, dtype=dt)
        big_k[1] = k
        k = big_k[1]
    return q, k, v, make_mask(rng, c["mask"], b, h, lq, lk, dt if dt != F32 else np.float32)


@pytest.mark.parametrize("c", matrix_cases(), ids=case_id)
def test_matrix_against_both_references(c):
    rng = np.random.default_rng(zlib.crc32(case_id(c).encode()))
    q, k, v, mask = inputs(rng, c)
    kw = dict(causal=c["causal"], layout=c["layout"], kernel=c["kernel"])
    out, lse = fattn.flash_attn_prefill(q, k, v, mask, return_lse=True, **kw)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert not np.isnan(as64(out)).any()

    exact, exact_lse = reference.attention(q, k, v, mask, causal="top_left" if c["causal"] else None,
                                           layout=c["layout"], return_lse=True)
    bound, score_err = prefill_exact_bound(q, k, v, mask, **kw)
    ok, err, allowed = within_exact_bound(out, exact, bound)
    assert ok.all(), f"max err {err.max():.3g}, worst err/allowed {(err / allowed).max():.3g}"
    # LSE moves by at most the score error, plus f32 rounding.
    empty = np.isneginf(exact_lse)
    assert (np.isneginf(lse) == empty).all()
    lse_err = np.abs(lse.astype(np.float64)[~empty] - exact_lse[~empty])
    assert (lse_err <= (score_err + 1e-6 * (1 + np.abs(exact_lse)))[~empty]).all(), lse_err.max()

    model = reference.flash_attn_prefill(q, k, v, mask, **kw)
    diff = np.abs(as64(out) - as64(model))
    if c["dtype"] == F32:
        assert diff.max() <= 1e-5 * np.abs(as64(v)).max()
    else:
        # One ulp, plus the f32 difference for outputs tiny against max|V|.
        assert (diff <= ulp(as64(model), c["dtype"]) + 5e-7 * np.abs(as64(v)).max()).all(), diff.max()
        assert (diff == 0).mean() >= 0.99


def bits(x):
    return np.ascontiguousarray(x).view(np.uint16 if x.dtype.itemsize == 2 else np.uint32)


def window_mask(lq, lk, window, dtype=np.float32):
    """Additive sliding-window causal mask: row i sees keys (i - window, i]."""
    i, j = np.arange(lq)[:, None], np.arange(lk)[None, :]
    return np.where((j <= i) & (j > i - window), 0.0, -np.inf).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d, kernel", [(64, "auto"), (80, "auto"), (256, "auto"), (512, "auto"), (512, "llamacpp")])
def test_blk_never_changes_a_bit(rng, dtype, d, kernel):
    lq, lk = 77, 300
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((2, 4, lq, d), (2, 2, lk, d), (2, 2, lk, d)))
    masks = {
        "window": window_mask(lq, lk, 40, dtype),
        "blocks": np.where(rng.random((lq // 8 + 1, lk // 8 + 1)) < 0.5, 0.0, -np.inf).repeat(8, 0).repeat(8, 1)[
            :lq, :lk].astype(np.float32),
        "bool_rank4": np.broadcast_to(rng.random((lq, lk)) < 0.2, (2, 4, lq, lk)) & (rng.random((2, 4, 1, 1)) < 0.7),
        "zeros_and_bias": np.concatenate([np.zeros((lq, 150)), rng.standard_normal((lq, 150))], 1).astype(dtype),
    }
    for name, mask in masks.items():
        for causal in (False, True):
            blk = fattn.flash_attn_prefill_blk(mask, head_dim=d, kernel=kernel)
            assert blk.dtype == np.uint8 and set(np.unique(blk)) <= {0, 1, 2}
            plain, lse = fattn.flash_attn_prefill(q, k, v, mask, causal=causal, kernel=kernel, return_lse=True)
            skipped, lse2 = fattn.flash_attn_prefill(q, k, v, mask, causal=causal, kernel=kernel, blk=blk,
                                                     return_lse=True)
            assert (bits(plain) == bits(skipped)).all(), name
            assert (bits(lse) == bits(lse2)).all(), name
    # The window and block masks really skip tiles (the map is not all ones).
    assert (fattn.flash_attn_prefill_blk(masks["window"], head_dim=d, kernel=kernel) == 0).any()


@pytest.mark.parametrize("stale", ["other_window", "other_kernel_geometry", "edited"])
def test_a_stale_blk_is_rejected_unless_verification_is_off(rng, stale):
    # A map that does not come from this mask could skip keys the mask lets through: by default
    # the call checks the map against the mask and raises; verify_blk=False trusts it (as the
    # GPU kernel does), and the skipped tiles then change the result.
    lq = lk = 300
    q, k, v = (rng.standard_normal((1, 2, lq, 64)).astype(np.float32) for _ in range(3))
    narrow, wide = window_mask(lq, lk, 40, np.float32), window_mask(lq, lk, 120, np.float32)
    if stale == "other_window":
        blk = fattn.flash_attn_prefill_blk(narrow, head_dim=64)
    elif stale == "other_kernel_geometry":
        blk = fattn.flash_attn_prefill_blk(narrow, head_dim=64, q_tile=32, k_tile=8)[:, ::2].copy()
    else:
        blk = fattn.flash_attn_prefill_blk(wide, head_dim=64)
        blk[blk.shape[0] - 1, 0] = 1 if blk[blk.shape[0] - 1, 0] != 1 else 0
    with pytest.raises(ValueError, match=r"^blk: tile \[\d+, \d+\] is \d but this mask gives \d"):
        fattn.flash_attn_prefill(q, k, v, wide, blk=blk)
    trusted = fattn.flash_attn_prefill(q, k, v, wide, blk=blk, verify_blk=False)
    if stale == "other_window":  # tiles inside the wide window but outside the narrow one were skipped
        assert not (bits(trusted) == bits(fattn.flash_attn_prefill(q, k, v, wide))).all()
    with pytest.raises(TypeError, match="^verify_blk"):
        fattn.flash_attn_prefill(q, k, v, wide, blk=blk, verify_blk="no")


def test_blk_rules_on_a_hand_built_mask():
    # Tiles of (q_tile=2, k_tile=8) over a [3, 20] mask: columns 16..19 form a partial tile.
    mask = np.zeros((3, 20), dtype=np.float32)
    mask[:, 8:16] = -np.inf          # tile column 1: fully blocked -> 0
    mask[0, 3] = 0.5                 # tile (0, 0): a bias -> 1; tile (1, 0): zeros -> 2
    blk = fattn.flash_attn_prefill_blk(mask, q_tile=2, k_tile=8)
    assert blk.tolist() == [[1, 0, 1], [2, 0, 1]]
    # Bool: all False -> 0, all True -> 2, mixed -> 1.
    keep = np.ones((3, 20), dtype=bool)
    keep[:, 8:16] = False
    keep[2, 0] = False
    assert fattn.flash_attn_prefill_blk(keep, q_tile=2, k_tile=8).tolist() == [[2, 0, 1], [1, 0, 1]]
    # Finite but very negative values are not "blocked": the seed's -1e30 threshold would
    # skip them although they still carry weight in a row that has nothing larger.
    mask[:, 8:16] = -1e31
    assert fattn.flash_attn_prefill_blk(mask, q_tile=2, k_tile=8)[:, 1].tolist() == [1, 1]
    # llama.cpp's kernel sees the mask through float16: -1e31 is -inf there, 1e-9 is 0.
    mask[:, 0:8] = 1e-9
    blk = fattn.flash_attn_prefill_blk(mask, head_dim=512, kernel="llamacpp")
    assert blk.tolist() == [[1]]  # one partial tile of 64 keys
    wide = np.full((8, 128), -1e31, dtype=np.float32)
    wide[:, 64:] = 1e-9
    assert fattn.flash_attn_prefill_blk(wide, kernel="llamacpp").tolist() == [[0, 2]]
    assert fattn.flash_attn_prefill_blk(wide, q_tile=8, k_tile=64).tolist() == [[1, 1]]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rank2_mask_equals_rank4_expansion_and_broadcasts(rng, dtype):
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((2, 4, 45, 64), (2, 2, 70, 64), (2, 2, 70, 64)))
    mask = np.where(rng.random((45, 70)) < 0.3, -np.inf, rng.standard_normal((45, 70))).astype(dtype)
    base = fattn.flash_attn_prefill(q, k, v, mask)
    for m in (np.ascontiguousarray(np.broadcast_to(mask, (2, 4, 45, 70))), mask[None, None], mask[None]):
        assert (bits(fattn.flash_attn_prefill(q, k, v, m)) == bits(base)).all()
    keep = rng.random((45, 70)) < 0.6
    a = fattn.flash_attn_prefill(q, k, v, keep)
    b = fattn.flash_attn_prefill(q, k, v, np.ascontiguousarray(np.broadcast_to(keep, (2, 4, 45, 70))))
    assert (bits(a) == bits(b)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kernel", ["auto", "llamacpp"])
def test_seq_major_equals_head_major(rng, dtype, kernel):
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((2, 4, 20, 512), (2, 1, 30, 512), (2, 1, 30, 512)))
    t = lambda x: np.ascontiguousarray(x.transpose(0, 2, 1, 3))
    base, lse = fattn.flash_attn_prefill(q, k, v, causal=True, kernel=kernel, return_lse=True)
    seq, lse2 = fattn.flash_attn_prefill(t(q), t(k), t(v), causal=True, kernel=kernel, layout="blhd",
                                         return_lse=True)
    assert seq.shape == (2, 20, 4, 512)
    assert (bits(t(seq)) == bits(base)).all() and (bits(lse) == bits(lse2)).all()


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_bit_identical_for_any_thread_count(rng, restore_threads, threads):
    q, k, v = (rng.standard_normal(s).astype(BF16) for s in ((1, 3, 100, 128), (1, 3, 90, 128), (1, 3, 90, 128)))
    fattn.set_num_threads(1)
    one = fattn.flash_attn_prefill(q, k, v, causal=True)
    fattn.set_num_threads(threads)
    assert (bits(fattn.flash_attn_prefill(q, k, v, causal=True)) == bits(one)).all()


def test_nsg_4_and_8_give_the_same_bits(rng):
    q, k, v = (rng.standard_normal(s).astype(F16) for s in ((1, 2, 19, 512), (1, 2, 70, 512), (1, 2, 70, 512)))
    a = fattn.flash_attn_prefill(q, k, v, kernel="llamacpp", nsg=4)
    b = fattn.flash_attn_prefill(q, k, v, kernel="llamacpp", nsg=8)
    assert (bits(a) == bits(b)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kernel, d", [("auto", 64), ("auto", 512), ("llamacpp", 512)])
def test_fully_masked_rows_are_zero_with_lse_minus_inf(rng, dtype, kernel, d):
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((1, 2, 9, d), (1, 2, 70, d), (1, 2, 70, d)))
    mask = np.zeros((9, 70), dtype=dtype)
    mask[3] = -np.inf
    keep = mask == 0
    for m in (mask, keep):
        out, lse = fattn.flash_attn_prefill(q, k, v, m, kernel=kernel, return_lse=True)
        assert not np.isnan(as64(out)).any() and not np.isnan(lse).any()
        assert (as64(out)[:, :, 3] == 0).all() and np.isneginf(lse[:, :, 3]).all()
        assert np.isfinite(lse[:, :, [0, 1, 2, 4]]).all()
    # Causal with a mask that blocks each row's only visible key: row 0 empty.
    m0 = np.zeros((9, 70), dtype=dtype)
    m0[0, 0] = -np.inf
    out, lse = fattn.flash_attn_prefill(q, k, v, m0, causal=True, kernel=kernel, return_lse=True)
    assert (as64(out)[:, :, 0] == 0).all() and np.isneginf(lse[:, :, 0]).all()
    assert not np.isnan(as64(out)).any()


def test_default_scale_and_explicit_scale(rng):
    q, k, v = (rng.standard_normal(s).astype(F32) for s in ((1, 2, 10, 80), (1, 2, 12, 80), (1, 2, 12, 80)))
    a = fattn.flash_attn_prefill(q, k, v)
    b = fattn.flash_attn_prefill(q, k, v, scale=np.float32(1) / np.sqrt(np.float32(80)))
    assert (bits(a) == bits(b)).all()
    c = fattn.flash_attn_prefill(q, k, v, scale=0.3)
    bound, _ = prefill_exact_bound(q, k, v, scale=0.3)
    assert within_exact_bound(c, reference.attention(q, k, v, scale=0.3), bound)[0].all()


def test_geometry_presets_and_overrides():
    assert fattn.prefill_geometry(64) == (32, 16)
    assert fattn.prefill_geometry(256) == (32, 16)
    assert fattn.prefill_geometry(128) == (32, 16)
    assert fattn.prefill_geometry(512) == (8, 8)
    assert fattn.prefill_geometry(320) == (8, 8)
    assert fattn.prefill_geometry(512, kernel="llamacpp") == (8, 64)
    assert fattn.prefill_geometry(64, q_tile=4, k_tile=32) == (4, 32)
    assert fattn.flash_attn_prefill_blk(np.zeros((33, 17), np.float32), head_dim=64).shape == (2, 2)
    assert fattn.flash_attn_prefill_blk(np.zeros((33, 17), np.float32), head_dim=512).shape == (5, 3)


def test_k_tile_override_changes_only_rounding(rng):
    q, k, v = (rng.standard_normal(s).astype(BF16) for s in ((1, 2, 40, 64), (1, 2, 90, 64), (1, 2, 90, 64)))
    for bk in (8, 32, 64):
        out = fattn.flash_attn_prefill(q, k, v, k_tile=bk, q_tile=16)
        model = reference.flash_attn_prefill(q, k, v, k_tile=bk, q_tile=16)
        assert (np.abs(as64(out) - as64(model)) <= ulp(as64(model), BF16) + 1e-6).all()
        blk = fattn.flash_attn_prefill_blk(window_mask(40, 90, 10), q_tile=16, k_tile=bk)
        assert blk.shape == (3, -(-90 // bk))


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 2), h_kv=st.integers(1, 2), group=st.sampled_from([1, 2, 4]), lq=st.integers(1, 40),
       lk=st.integers(1, 70), d=st.sampled_from([8, 16, 24, 64, 72]), causal=st.booleans(),
       mask_kind=st.sampled_from(["none", "bool", "additive"]), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2 ** 32 - 1))
def test_property_any_shape_within_bound(b, h_kv, group, lq, lk, d, causal, mask_kind, dtype, seed):
    rng = np.random.default_rng(seed)
    h = h_kv * group
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((b, h, lq, d), (b, h_kv, lk, d), (b, h_kv, lk, d)))
    mask = None
    if mask_kind == "bool":
        mask = rng.random((lq, lk)) < 0.7
    elif mask_kind == "additive":
        mask = np.where(rng.random((b, 1, lq, lk)) < 0.3, -np.inf, rng.standard_normal((b, 1, lq, lk))).astype(dtype)
    out = fattn.flash_attn_prefill(q, k, v, mask, causal=causal)
    exact = reference.attention(q, k, v, mask, causal="top_left" if causal else None)
    bound, _ = prefill_exact_bound(q, k, v, mask, causal=causal)
    assert within_exact_bound(out, exact, bound)[0].all()
