"""The prefill's bf16 Q·Kᵀ is fattn's bf16 dot product (docs/numerics.md §4, step 3): pairs
(0, 1), (2, 3), ... in order, within a pair the second element's fused multiply-add first,
denormal inputs read as zero and tiny sums flushed to zero after each step, as AVX512_BF16's
VDPBF16PS computes. Held here on every path (scalar model, AVX2, AVX-512, AVX512_BF16 and the
emulated twins) against an independent NumPy model, on data built to reach the cases where
the order and the flushing change the bits.

The score is read back through the LSE of a call with one key per head: there the row's
maximum is its score and its sum is 1, so llama.cpp's LSE (``m + ln l``) is the score
itself and candle's (``ln2·(m + log2 l)`` in double) a function of it."""
import ml_dtypes
import numpy as np
import pytest

import fattn
from helpers import BF16

PATHS = fattn.available_isas(include_emulated=True)
TINY = np.float64(2.0 ** -126)


def _daz(x):
    """Denormal inputs read as zero (keeping the sign)."""
    return np.where(np.abs(x) < TINY, np.copysign(0.0, x), x)


def _fma_daz_ftz(a, b, c):
    """f32 fma(a, b, c) for bf16 a, b and f32 c (all as float64), DAZ inputs, x86's FTZ:
    the exact sum rounded to 24 bits as if the exponent were unbounded, zero of its sign
    when that is below 2^-126. Independent of the C++ model: the product is exact in
    float64; the sum is rounded to odd in float64 (TwoSum), which makes the rounding to
    float32 correct (Boldo and Melquiond)."""
    a, b, c = _daz(a), _daz(b), _daz(c)
    p = a * b
    s = p + c
    bp = s - c
    e = (p - bp) + (c - (s - bp))  # s + e == p + c exactly
    toward_zero = (e != 0) & (np.sign(e) != np.sign(s))
    t = np.where(toward_zero, np.nextafter(s, 0.0), s)
    bits = t.view(np.int64)
    t = np.where(e != 0, (bits | 1).view(np.float64), t)  # round to odd
    with np.errstate(over="ignore"):
        tiny = np.abs((t * 2.0 ** 64).astype(np.float32)) < np.float32(2.0 ** -62)
    return np.where(tiny, np.copysign(0.0, t), t.astype(np.float32).astype(np.float64))


def bf16_dot_model(a, b):
    """Σ a·b over the last axis as fattn's bf16 dot product, in float64 carrying f32 values."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape[-1] % 2:
        pad = [(0, 0)] * (a.ndim - 1) + [(0, 1)]
        a, b = np.pad(a, pad), np.pad(b, pad)
    acc = np.zeros(a.shape[:-1])
    for d in range(0, a.shape[-1], 2):
        acc = _fma_daz_ftz(a[..., d + 1], b[..., d + 1], acc)
        acc = _fma_daz_ftz(a[..., d], b[..., d], acc)
    return acc.astype(np.float32)


def edgy_bf16(rng, shape, tiny_only=False):
    """bf16 values whose products and partial sums reach the cases that matter: ordinary
    values of mixed magnitude (so the order of each pair changes roundings), values near
    2^-63 (products near the normal limit 2^-126), denormals, zeros of both signs; with
    ``tiny_only`` none of the ordinary ones, so whole sums stay near 2^-126."""
    kind = rng.integers(1, 4, shape) if tiny_only else rng.integers(0, 6, shape)
    mant = 1.0 + rng.integers(0, 128, shape) / 128.0
    sign = np.where(rng.integers(0, 2, shape) == 1, -1.0, 1.0)
    exp = np.select([kind == 0, kind == 1, kind == 2, kind == 3],
                    [rng.integers(-8, 9, shape), rng.integers(-66, -60, shape),
                     rng.integers(-133, -126, shape), np.full(shape, -200)],
                    rng.integers(-20, 21, shape))
    return (sign * mant * np.exp2(exp.astype(np.float64))).astype(BF16)


def one_key_per_head(rng, d, heads=8, rows=40):
    """Heads 0-3 on mixed data, heads 4-7 on tiny data only."""
    half = heads // 2
    q = np.concatenate([edgy_bf16(rng, (1, half, rows, d)), edgy_bf16(rng, (1, heads - half, rows, d), True)], 1)
    k = np.concatenate([edgy_bf16(rng, (1, half, 1, d)), edgy_bf16(rng, (1, heads - half, 1, d), True)], 1)
    v = np.ones((1, heads, 1, d), dtype=BF16)
    return q, k, v


def test_the_numpy_model_agrees_with_hand_worked_cases():
    # 1 first, then 2^-24 twice: each sum rounds back to 1 (ties to even); the two
    # products summed first would have given 1 + 2^-23.
    assert bf16_dot_model([0, 1.0, 2.0 ** -12, 2.0 ** -12], [0, 1.0, 2.0 ** -12, 2.0 ** -12]) == 1.0
    # Pairs (2^30, 0) then (64, -2^30): the second element of a pair comes first, so
    # 2^30 - 2^30 + 64 = 64, where the order of D gives 2^30 + 64 = 2^30 (a tie), then 0.
    a = np.array([2.0 ** 15, 0, 2.0 ** 3, -(2.0 ** 15)])
    b = np.array([2.0 ** 15, 0, 2.0 ** 3, 2.0 ** 15])
    assert bf16_dot_model(a, b) == 64.0      # pair order: 2^30, then -2^30, then +64
    assert np.float32(np.float32(2.0 ** 30) + np.float32(64.0)) - np.float32(2.0 ** 30) == 0.0  # in order: 0
    # A bf16 denormal times a large value reads as zero.
    assert bf16_dot_model([2.0 ** -130, 0], [2.0 ** 100, 0]) == 0.0
    # 2^-126 minus 1.25·2^-151: gradual underflow would give 2^-126; x86's rule flushes.
    acc = _fma_daz_ftz(np.float64(1.0), np.float64(2.0 ** -126), np.float64(0.0))
    assert _fma_daz_ftz(np.float64(-1.25 * 2.0 ** -75), np.float64(2.0 ** -76), acc) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_llamacpp_scores_are_the_bf16_dot_product_on_every_path(restore_isa, seed):
    rng = np.random.default_rng(seed)
    q, k, v = one_key_per_head(rng, 512)
    want = bf16_dot_model(q.astype(np.float64), k.astype(np.float64)) + np.float32(0.0)  # m + ln(l = 1): -0 → +0
    assert np.count_nonzero(want[:, :4]) > 0.9 * want[:, :4].size
    assert (np.abs(want[:, 4:]) < 2.0 ** -100).all() and np.count_nonzero(want[:, 4:]) > 0.2 * want[:, 4:].size
    for isa in PATHS:
        fattn.set_isa(isa)
        _, lse = fattn.flash_attn_prefill(q, k, v, kernel="llamacpp", scale=1.0, return_lse=True)
        mismatch = lse.view(np.uint32) != want.view(np.uint32)
        assert not mismatch.any(), (isa, np.argwhere(mismatch)[:3], lse[mismatch][:3], want[mismatch][:3])


@pytest.mark.parametrize("d", [1, 2, 7, 64, 127, 128])
def test_candle_scores_are_the_bf16_dot_product_on_every_path(restore_isa, d):
    rng = np.random.default_rng(d)
    q, k, v = one_key_per_head(rng, d)
    # c = bf16(scale · log2e) = 1 exactly, so the staged Q is q itself.
    scale = float(np.float32(1.0) / np.float32(1.4426950408889634))
    assert fattn.round_to(np.asarray(np.float32(scale) * np.float32(1.4426950408889634)), ml_dtypes.bfloat16) == 1.0
    dots = bf16_dot_model(q.astype(np.float64), k.astype(np.float64))
    want = ((dots.astype(np.float64) + 0.0) * 0.69314718055994530942).astype(np.float32)  # + log2(l = 1)
    for isa in PATHS:
        fattn.set_isa(isa)
        _, lse = fattn.flash_attn_prefill(q, k, v, scale=scale, return_lse=True)
        mismatch = lse.view(np.uint32) != want.view(np.uint32)
        assert not mismatch.any(), (isa, d, np.argwhere(mismatch)[:3], lse[mismatch][:3], want[mismatch][:3])


@pytest.mark.parametrize("kernel,d", [("candle", 96), ("candle", 33), ("llamacpp", 512)])
def test_every_path_gives_the_scalar_models_bits_on_edgy_bf16(restore_isa, kernel, d):
    # Many keys and rows (several tiles, a partial block), masks and causal on, data at the
    # edges of the dot product's rules: every path reproduces the scalar model to the bit.
    rng = np.random.default_rng(d)
    q = edgy_bf16(rng, (1, 4, 45, d), tiny_only=kernel == "candle")
    k = edgy_bf16(rng, (1, 2, 70, d), tiny_only=kernel == "candle")
    v = rng.standard_normal((1, 2, 70, d)).astype(BF16)
    results = {}
    for isa in PATHS:
        fattn.set_isa(isa)
        results[isa] = fattn.flash_attn_prefill(q, k, v, kernel=kernel, causal=True, return_lse=True)
    for isa in PATHS:
        for got, want in zip(results[isa], results["scalar"]):
            assert (np.ascontiguousarray(got).view(np.uint8) == np.ascontiguousarray(want).view(np.uint8)).all(), isa


@pytest.mark.parametrize("kernel,d", [("candle", 96), ("candle", 33), ("llamacpp", 512)])
@pytest.mark.parametrize("scale", [None, 2.0 ** 100])
def test_bounds_hold_where_the_dot_product_drops_and_flushes(kernel, d, scale):
    # Sums near 2^-126 (scaled up by 2^100, so that what DAZ and FTZ drop reaches the
    # scores): fattn.bounds.prefill_bound, which counts both, holds against float64.
    from fattn import bounds, reference
    rng = np.random.default_rng(d)
    q = edgy_bf16(rng, (1, 4, 45, d), True)
    k = edgy_bf16(rng, (1, 2, 70, d), True)
    v = rng.standard_normal((1, 2, 70, d)).astype(BF16)
    out, lse = fattn.flash_attn_prefill(q, k, v, kernel=kernel, causal=True, scale=scale, return_lse=True)
    exact, exact_lse = reference.attention(q, k, v, causal="top_left", scale=scale, return_lse=True)
    bound, score_err = bounds.prefill_bound(q, k, v, causal=True, kernel=kernel, scale=scale)
    ok, _, _ = bounds.within(out, exact, bound)
    assert ok.all()
    lse_err = np.abs(lse.astype(np.float64) - exact_lse)
    assert (lse_err <= score_err + 1e-6 * (1 + np.abs(exact_lse))).all()
