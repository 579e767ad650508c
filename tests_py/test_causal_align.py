"""causal="top_left" / "bottom_right" on the kernels that take `causal`: the exact answer within
the stated bound, every instruction-set path bit-identical to the scalar model, `True` the
kernel's own alignment to the bit, and rows before the first key 0 (LSE -inf)."""
import numpy as np
import pytest

import fattn
from fattn import reference
from helpers import BF16, DTYPES, F32, as64, exact_tolerance, prefill_exact_bound, within_exact_bound

SHAPES = [(5, 40), (37, 53), (70, 20), (33, 33), (1, 100), (100, 1), (64, 200)]  # (Lq, Lk)
ALIGNS = ["top_left", "bottom_right"]


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def inputs(rng, dtype, lq, lk, d, h=4, h_kv=2):
    def r(n):
        return rng.standard_normal((1, h, n, d) if n is lq else (1, h_kv, n, d)).astype(dtype)
    return rng.standard_normal((1, h, lq, d)).astype(dtype), r(lk), r(lk)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("align", ALIGNS)
@pytest.mark.parametrize("lq, lk", SHAPES)
@pytest.mark.parametrize("d, kernel", [(64, "auto"), (200, "auto"), (512, "auto"), (512, "llamacpp")])
def test_prefill_alignment(dtype, align, lq, lk, d, kernel):
    rng = np.random.default_rng(lq * 1000 + lk + d)
    q, k, v = inputs(rng, dtype, lq, lk, d)
    out, lse = fattn.flash_attn_prefill(q, k, v, causal=align, kernel=kernel, return_lse=True)
    exact, exact_lse = reference.attention(q, k, v, causal=align, return_lse=True)
    bound, _ = prefill_exact_bound(q, k, v, causal=align, kernel=kernel)
    ok, err, allowed = within_exact_bound(out, np.nan_to_num(exact), bound)
    assert ok.all(), (err / allowed).max()
    offset = lk - lq if align == "bottom_right" else 0
    blind = np.arange(lq) + offset < 0  # rows before the first key
    assert (as64(out)[:, :, blind] == 0).all()
    assert np.isneginf(lse[:, :, blind]).all() and np.isfinite(lse[:, :, ~blind]).all()
    if align == "top_left":  # True is the prefill seed's own (top-left) alignment
        assert (bits(out) == bits(fattn.flash_attn_prefill(q, k, v, causal=True, kernel=kernel))).all()
    saved = fattn.build_info()["isa"]
    try:
        for isa in fattn.available_isas(include_emulated=True):
            fattn.set_isa(isa)
            o2, l2 = fattn.flash_attn_prefill(q, k, v, causal=align, kernel=kernel, return_lse=True)
            assert (bits(o2) == bits(out)).all() and (bits(l2) == bits(lse)).all(), isa
    finally:
        fattn.set_isa(saved)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("align", ALIGNS)
@pytest.mark.parametrize("lq, lk", SHAPES)
def test_sdpa_alignment(dtype, align, lq, lk):
    rng = np.random.default_rng(lq * 1000 + lk)
    q, k, v = inputs(rng, dtype, lq, lk, 48)
    out = fattn.sdpa(q, k, v, causal=align)
    exact = np.nan_to_num(reference.attention(q, k, v, causal=align))
    assert (np.abs(as64(out) - exact) <= exact_tolerance(dtype, exact, v)).all()
    np.testing.assert_allclose(as64(out), as64(reference.sdpa(q, k, v, causal=align)),
                               atol=1e-5 if dtype == F32 else 1e-2, rtol=0)
    if align == "bottom_right":  # True is the sdpa seed's own (bottom-right) alignment
        assert (bits(out) == bits(fattn.sdpa(q, k, v, causal=True))).all()
    saved = fattn.build_info()["isa"]
    try:
        for isa in fattn.available_isas(include_emulated=True):
            fattn.set_isa(isa)
            assert (bits(fattn.sdpa(q, k, v, causal=align)) == bits(out)).all(), isa
    finally:
        fattn.set_isa(saved)


def test_alignment_with_a_mask_and_blk_map():
    """bottom_right with a window mask and its tile map, through the blhd layout: the map changes no bit."""
    rng = np.random.default_rng(7)
    lq, lk = 40, 100
    q, k, v = inputs(rng, BF16, lq, lk, 64)
    i, j = np.arange(lq)[:, None] + (lk - lq), np.arange(lk)[None, :]
    mask = j > i - 30
    blk = fattn.flash_attn_prefill_blk(mask, head_dim=64)
    t = (lambda a: a.transpose(0, 2, 1, 3))
    out = fattn.flash_attn_prefill(t(q), t(k), t(v), mask, causal="bottom_right", layout="blhd")
    with_blk = fattn.flash_attn_prefill(t(q), t(k), t(v), mask, causal="bottom_right", layout="blhd", blk=blk)
    assert (bits(out) == bits(with_blk)).all()
    exact = reference.attention(q, k, v, mask, causal="bottom_right")
    np.testing.assert_allclose(as64(t(out)), exact, atol=2e-2)


@pytest.mark.parametrize("fn", [fattn.sdpa, fattn.flash_attn_prefill])
@pytest.mark.parametrize("bad, exc", [("yes", TypeError), ("TOP_LEFT", TypeError), (1, TypeError), (None, TypeError)])
def test_bad_causal_values(fn, bad, exc):
    q = np.ones((1, 2, 3, 8), F32)
    with pytest.raises(exc, match="causal: expected a bool"):
        fn(q, q, q, causal=bad)
