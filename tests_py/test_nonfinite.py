"""Non-finite q, k, v (docs/numerics.md, "Non-finite inputs"): on every kernel, dtype and ISA
path, which output entries become NaN or +-inf is exactly what a float64 model of the rules
predicts, and every entry that does not read the bad value keeps the clean run's bits."""
import zlib

import numpy as np
import pytest

import fattn
from helpers import BF16, DTYPES, F16, F32

VALUES = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}


@pytest.fixture(params=fattn.available_isas(include_emulated=True))
def isa(request):
    saved = fattn.build_info()["isa"]
    fattn.set_isa(request.param)
    yield request.param
    fattn.set_isa(saved)


def expected_pattern(q, k, v, scale, visible, contributing):
    """float64 model, [B, H, Lq, D] (k and v expanded to H heads): a row whose visible scores
    include NaN or +inf is NaN throughout; otherwise component d is sum_j w_j v_jd over the
    contributing keys (w_j = 0 for a key the row does not see, and 0 * NaN = 0 * inf = NaN),
    over sum_j w_j."""
    with np.errstate(all="ignore"):
        s = np.einsum("bhid,bhjd->bhij", q, k) * scale
        bad_row = np.any(visible & (np.isnan(s) | (s == np.inf)), axis=-1)
        s_vis = np.where(visible & ~bad_row[..., None], s, -np.inf)
        m = s_vis.max(axis=-1, keepdims=True)
        assert np.all(m[~bad_row] > -np.inf), "model: every test row must keep a finite score"
        m = np.where(bad_row[..., None], 0.0, m)
        w = np.where(visible, np.exp(s_vis - m), 0.0)
        prod = w[..., None] * v[:, :, None, :, :]  # [B, H, i, j, D]
        prod = np.where(contributing[..., None], prod, 0.0)
        out = prod.sum(axis=3) / w.sum(axis=-1)[..., None]
    out[bad_row] = np.nan
    return out


def check(got, clean, model):
    got64 = np.asarray(got).astype(np.float64)
    for name, f in (("nan", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        np.testing.assert_array_equal(f(got64), f(model), err_msg=f"{name} pattern")
    finite_model = np.isfinite(model)
    assert np.all(np.isfinite(got64[finite_model]))
    # Entries the model leaves finite and whose row reads nothing non-finite keep the clean bits.
    untouched = np.all(finite_model, axis=-1) & np.all(np.isfinite(np.asarray(clean, np.float64)), axis=-1)
    return got64, untouched


def inject(arrays, where, index, value):
    out = {name: a.copy() for name, a in arrays.items()}
    out[where][index] = value
    return out


# --- prefill (both kernels) and naive SDPA ---------------------------------------------------

B, H, H_KV, LQ, LK = 1, 4, 2, 40, 40
POSITIONS = {"q": (0, 1, 21, 5), "k": (0, 0, 17, 5), "v": (0, 1, 17, 5)}


def prefill_case(dtype, d, seed):
    rng = np.random.default_rng(seed)
    return {"q": rng.standard_normal((B, H, LQ, d)).astype(dtype),
            "k": rng.standard_normal((B, H_KV, LK, d)).astype(dtype),
            "v": rng.standard_normal((B, H_KV, LK, d)).astype(dtype)}


def tiles_visited(causal, bq, bk):
    i = np.arange(LQ)[:, None]
    j = np.arange(LK)[None, :]
    if not causal:
        return np.ones((LQ, LK), bool)
    last_row_of_block = np.minimum((i // bq + 1) * bq - 1, LQ - 1)
    return (j // bk) * bk <= last_row_of_block


def run_prefill_family(kernel, dtype, where, value, causal, d):
    base = prefill_case(dtype, d, seed=zlib.crc32(f"{kernel}{where}{dtype}".encode()) % 1000)
    bad = inject(base, where, POSITIONS[where], value)
    scale = float(np.float32(1) / np.sqrt(np.float32(d)))
    if kernel == "sdpa":
        call = lambda a: fattn.sdpa(a["q"], a["k"], a["v"], causal=causal)  # noqa: E731
        visible = np.tril(np.ones((LQ, LK), bool)) if causal else np.ones((LQ, LK), bool)
        contributing = visible
    else:
        call = lambda a: fattn.flash_attn_prefill(a["q"], a["k"], a["v"], causal=causal,  # noqa: E731
                                                  kernel=kernel)
        visible = np.tril(np.ones((LQ, LK), bool)) if causal else np.ones((LQ, LK), bool)
        contributing = tiles_visited(causal, *fattn.prefill_geometry(d, kernel=kernel))
    with np.errstate(all="ignore"):
        clean, got = call(base), call(bad)
    # The model sees the values the kernel sees: inputs in float64, candle's Q pre-scaling is
    # finite for finite q and keeps +-inf / NaN, so the pattern is the same.
    q64, k64, v64 = (bad[n].astype(np.float64) for n in "qkv")
    k64, v64 = np.repeat(k64, H // H_KV, axis=1), np.repeat(v64, H // H_KV, axis=1)
    model = expected_pattern(q64, k64, v64, scale, visible[None, None], contributing[None, None])
    got64, untouched = check(got, clean, model)
    ref_rows = np.ones_like(untouched)
    if where == "q":
        ref_rows[POSITIONS["q"][:3]] = False
    elif where == "k":
        ref_rows[:, POSITIONS["k"][1] * 2:(POSITIONS["k"][1] + 1) * 2] &= ~visible[:, POSITIONS["k"][2]][None, None]
    else:
        h0 = POSITIONS["v"][1] * 2
        ref_rows[:, h0:h0 + 2] &= ~contributing[:, POSITIONS["v"][2]][None, None]
    np.testing.assert_array_equal(np.asarray(got)[ref_rows].view(np.uint8),
                                  np.asarray(clean)[ref_rows].view(np.uint8))
    return got64, model


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("where", "qkv")
@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("kernel", ["sdpa", "candle"])
def test_prefill_and_sdpa(isa, kernel, causal, value, where, dtype):
    run_prefill_family(kernel, dtype, where, VALUES[value], causal, d=64)


@pytest.mark.parametrize("where", "qkv")
@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_prefill_llamacpp(isa, causal, value, where):
    run_prefill_family("llamacpp", F16, where, VALUES[value], causal, d=512)


def test_prefill_v_nan_in_a_skipped_tile_is_not_read(isa):
    """Tiles a causal block does not visit are never read: NaN there changes no bit."""
    base = prefill_case(BF16, 64, seed=3)
    clean = fattn.flash_attn_prefill(base["q"], base["k"], base["v"], causal=True)
    for where in "kv":
        bad = inject(base, where, (0, 0, 39, slice(None)), np.nan)  # key 39: only the last block visits it
        got = fattn.flash_attn_prefill(bad["q"], bad["k"], bad["v"], causal=True)
        bq, _ = fattn.prefill_geometry(64)
        first_visiting = (39 // bq) * bq
        np.testing.assert_array_equal(got[:, :, :first_visiting].view(np.uint16),
                                      clean[:, :, :first_visiting].view(np.uint16))
        assert np.isnan(got[:, :2, 39].astype(np.float64)).all()


# --- vec decode, its halves, merge -----------------------------------------------------------

def decode_case(dtype, seed, heads=4, kv_heads=2, cap=200, d=64):
    rng = np.random.default_rng(seed)
    return {"q": rng.standard_normal((heads, d)).astype(F32),
            "k": rng.standard_normal((kv_heads, cap, d)).astype(dtype),
            "v": rng.standard_normal((kv_heads, cap, d)).astype(dtype)}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("where", "qkv")
@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("window", [0, 40], ids=["all", "window40"])
def test_vec_decode(isa, dtype, where, value, window):
    kv_len = 150
    base = decode_case(dtype, seed=11)
    index = {"q": (1, 7), "k": (0, 120, 7), "v": (1, 130, 7)}[where]
    bad = inject(base, where, index, VALUES[value])
    kw = dict(kv_seq_len=kv_len, nwg=4, mask="sliding_window" if window else "none", window=window)
    with np.errstate(all="ignore"):
        clean = fattn.flash_attn_vec(base["q"], base["k"], base["v"], **kw)
        got = fattn.flash_attn_vec(bad["q"], bad["k"], bad["v"], **kw)
        parts = fattn.flash_attn_vec_partials(bad["q"], bad["k"], bad["v"], **kw)
    np.testing.assert_array_equal(fattn.flash_attn_vec_reduce(*parts).view(np.uint32), got.view(np.uint32))
    # Positions the kernel reads: every position < kv_seq_len of a chunk with at least one
    # position in the window (window-masked ones get a finite -65504 added, weight 0).
    pos = np.arange(base["k"].shape[1])
    start = max(0, kv_len - window) if window else 0
    chunk_live = ((pos // 32) * 32 + 31 >= start) & (pos < kv_len)
    visible_in = chunk_live  # NaN/+inf scores of read positions poison the row, masked or not
    q16 = bad["q"].astype(np.float16).astype(np.float64)  # Q is staged as half
    k64 = np.repeat(bad["k"].astype(np.float64), 2, axis=0)
    v64 = np.repeat(bad["v"].astype(np.float64), 2, axis=0)
    scale = float(np.float32(1) / np.sqrt(np.float32(64)))
    with np.errstate(all="ignore"):
        s = np.einsum("hd,hjd->hj", q16, k64) * scale
    keep = pos >= start
    vis = np.broadcast_to(visible_in, s.shape)
    bad_row = np.any(vis & (np.isnan(s) | (s == np.inf)), axis=-1)
    w_vis = vis & keep[None]
    with np.errstate(all="ignore"):
        s_k = np.where(w_vis & ~bad_row[:, None], s, -np.inf)
        w = np.where(w_vis, np.exp(s_k - s_k.max(axis=-1, keepdims=True)), 0.0)
        prod = np.where(vis[..., None], w[..., None] * v64, 0.0)
        model = prod.sum(axis=1) / w.sum(axis=-1)[:, None]
    model[bad_row] = np.nan
    got64, _ = check(got, clean, model)
    reads = {"q": [1], "k": [0, 1], "v": [2, 3]}[where]
    other = [h for h in range(4) if h not in reads]
    np.testing.assert_array_equal(got[other].view(np.uint32), clean[other].view(np.uint32))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("value", VALUES)
def test_vec_decode_ignores_the_capacity_past_kv_seq_len(isa, dtype, value):
    base = decode_case(dtype, seed=5)
    clean = fattn.flash_attn_vec(base["q"], base["k"], base["v"], kv_seq_len=77)
    bad = {n: a.copy() for n, a in base.items()}
    bad["k"][:, 77:] = VALUES[value]
    bad["v"][:, 77:] = VALUES[value]
    got = fattn.flash_attn_vec(bad["q"], bad["k"], bad["v"], kv_seq_len=77)
    np.testing.assert_array_equal(got.view(np.uint32), clean.view(np.uint32))


def test_half_overflow_of_q_behaves_as_inf(isa):
    """q is staged as float16: a finite |q| >= 65520 becomes +-inf before the dot."""
    base = decode_case(F16, seed=2)
    big = inject(base, "q", (0, 3), 1e6)
    inf = inject(base, "q", (0, 3), np.inf)
    with np.errstate(all="ignore"):
        a = fattn.flash_attn_vec(big["q"], big["k"], big["v"], kv_seq_len=100)
        b = fattn.flash_attn_vec(inf["q"], inf["k"], inf["v"], kv_seq_len=100)
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    assert np.isnan(a[0]).all()


@pytest.mark.parametrize("value", VALUES)
def test_merge_and_reduce(isa, value):
    """merge_attention / flash_attn_vec_reduce: a non-finite LSE (or m) poisons its row (NaN),
    except -inf, which is an empty part (weight 0); a non-finite output/o entry reaches only its
    own component of its own row (weight 0 keeps it: 0 * NaN = NaN)."""
    rng = np.random.default_rng(0)
    outs = [rng.standard_normal((3, 8)).astype(F32) for _ in range(2)]
    lses = [rng.standard_normal(3).astype(F32) for _ in range(2)]
    clean = fattn.merge_attention(outs, lses)
    val = VALUES[value]
    l_bad = [lses[0].copy(), lses[1]]
    l_bad[0][1] = val
    with np.errstate(all="ignore"):
        got = fattn.merge_attention(outs, l_bad)
    if value == "-inf":
        np.testing.assert_array_equal(got[1], outs[1][1])
    else:
        assert np.isnan(got[1]).all()
    np.testing.assert_array_equal(got[[0, 2]].view(np.uint32), clean[[0, 2]].view(np.uint32))
    o_bad = [outs[0].copy(), outs[1]]
    o_bad[0][2, 5] = val
    with np.errstate(all="ignore"):
        got = fattn.merge_attention(o_bad, lses)
    expect = np.isnan(val) and "nan" or ("+inf" if val > 0 else "-inf")
    assert {"nan": np.isnan, "+inf": np.isposinf, "-inf": np.isneginf}[expect](got[2, 5])
    mask = np.ones_like(got, bool)
    mask[2, 5] = False
    np.testing.assert_array_equal(got[mask].view(np.uint32), clean[mask].view(np.uint32))


@pytest.mark.parametrize("where", "qkv")
@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_exact_reference_has_the_sdpa_pattern(causal, value, where):
    """fattn.reference.attention (float64) propagates non-finite inputs as sdpa does: over the
    keys a row sees, NaN rows for NaN/+inf scores, +-inf components from +-inf in v."""
    base = prefill_case(F32, 64, seed=1)
    bad = inject(base, where, POSITIONS[where], VALUES[value])
    with np.errstate(all="ignore"):
        got = fattn.sdpa(bad["q"], bad["k"], bad["v"], causal=causal)
        ref = fattn.reference.attention(bad["q"], bad["k"], bad["v"], causal="bottom_right" if causal else None)
    for f in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(f(got), f(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(got[finite], ref[finite], atol=1e-5 * np.abs(base["v"]).max())


@pytest.mark.parametrize("kernel, d, dtype", [("candle", 64, BF16), ("candle", 64, F32), ("llamacpp", 512, F16)])
def test_prefill_mask_blocks_a_nan_score_only_when_boolean(isa, kernel, d, dtype):
    """A key blocked by a bool mask (or causal) has its score replaced: a NaN score there does
    not reach the row. An additive -inf is added to the score: NaN + -inf = NaN, so it does."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, 8, d)).astype(dtype) for _ in range(3))
    k[0, 0, 3, 0] = np.nan
    blocked = np.ones((8, 8), bool)
    blocked[2, 3] = False
    additive = np.where(blocked, 0.0, -np.inf).astype(np.float32)
    out_b, lse_b = fattn.flash_attn_prefill(q, k, v, blocked, kernel=kernel, return_lse=True)
    out_a, lse_a = fattn.flash_attn_prefill(q, k, v, additive, kernel=kernel, return_lse=True)
    assert np.isfinite(out_b[0, 0, 2].astype(np.float64)).all() and np.isfinite(lse_b[0, 0, 2])
    assert np.isnan(out_a[0, 0, 2].astype(np.float64)).all() and np.isnan(lse_a[0, 0, 2])
    assert np.isnan(lse_b[0, 0, [0, 1, 3]]).all()  # rows that see key 3: NaN, LSE NaN too


def test_rows_whose_every_score_is_minus_inf(isa):
    """+-inf in q can make every score of a row -inf: the prefill and decode kernels then treat
    the row as seeing no key (0), the naive SDPA gives NaN (its running max starts at -inf and
    exp(-inf - -inf) is NaN)."""
    q = np.zeros((1, 1, 2, 64), F32)
    q[..., 0] = np.inf
    k = np.ones((1, 1, 4, 64), F32)
    k[..., 0] = -1.0
    with np.errstate(all="ignore"):
        assert np.isnan(fattn.sdpa(q, k, k, causal=False)).all()
        np.testing.assert_array_equal(fattn.flash_attn_prefill(q, k, k), 0.0)
        np.testing.assert_array_equal(fattn.flash_attn_vec(q[0, :, 0], k[0].astype(F16), k[0].astype(F16),
                                                           kv_seq_len=4), 0.0)


@pytest.mark.parametrize("value", VALUES)
def test_reduce_partials(isa, value):
    """flash_attn_vec_reduce: NaN or +inf in a group's m poisons its row; -inf is an empty group;
    a non-finite o entry reaches only its component."""
    rng = np.random.default_rng(1)
    o = rng.standard_normal((3, 4, 32)).astype(F32)
    s = rng.uniform(1, 2, (3, 4)).astype(F32)
    m = rng.standard_normal((3, 4)).astype(F32)
    clean = fattn.flash_attn_vec_reduce(o, s, m)
    val = VALUES[value]
    m_bad = m.copy()
    m_bad[1, 2] = val
    with np.errstate(all="ignore"):
        got = fattn.flash_attn_vec_reduce(o, s, m_bad)
    if value == "-inf":
        assert np.isfinite(got[1]).all()
        s0 = s.copy()
        s0[1, 2] = 0
        o0 = o.copy()
        o0[1, 2] = 0
        np.testing.assert_allclose(got[1], fattn.flash_attn_vec_reduce(o0, s0, m)[1], rtol=1e-6)
    else:
        assert np.isnan(got[1]).all()
    np.testing.assert_array_equal(got[[0, 2]].view(np.uint32), clean[[0, 2]].view(np.uint32))
    o_bad = o.copy()
    o_bad[2, 1, 7] = val
    with np.errstate(all="ignore"):
        got = fattn.flash_attn_vec_reduce(o_bad, s, m)
    assert {"nan": np.isnan, "+inf": np.isposinf, "-inf": np.isneginf}[value](got[2, 7])
    keep = np.ones_like(got, bool)
    keep[2, 7] = False
    np.testing.assert_array_equal(got[keep].view(np.uint32), clean[keep].view(np.uint32))
