"""The dtype core against ml_dtypes and NumPy over every 16-bit pattern."""
import numpy as np
import pytest

import fattn
from fattn import _core
from helpers import BF16, F16, F32

ALL16 = np.arange(65536, dtype=np.uint32).astype(np.uint16)


def convert(src, dtype):
    dst = np.empty(src.shape, dtype=dtype)
    _core.convert(np.ascontiguousarray(src), dst)
    return dst


def same_or_both_nan(got, want):
    with np.errstate(invalid="ignore"):  # widening a signalling NaN warns
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.where(np.isnan(want), np.isnan(got), got.view(np.uint64) == want.view(np.uint64))


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "f16"])
def test_widening_every_pattern_matches_ml_dtypes_and_numpy(dtype):
    src = ALL16.view(dtype)
    got = convert(src, F32)
    want = src.astype(np.float32)
    assert same_or_both_nan(got, want).all()


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "f16"])
def test_narrowing_every_pattern_and_its_neighbourhood(dtype):
    # For every 16-bit upper half, f32 values with interesting lower halves:
    # exact, ties, just above and below ties, the extremes.
    lows = np.array([0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x1000, 0xF000, 0x4000, 0xC000],
                    dtype=np.uint32)
    bits = (ALL16.astype(np.uint32)[:, None] << 16 | lows[None, :]).reshape(-1)
    x = bits.view(np.float32)
    got = convert(x, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(dtype)
    ok = same_or_both_nan(got.astype(np.float32), want.astype(np.float32))
    assert ok.all(), f"first mismatch at f32 bits {bits[~ok][:4]}"
    # Bit patterns agree exactly away from NaN (signed zeros included).
    finite = ~np.isnan(x)
    assert (got.view(np.uint16)[finite] == want.view(np.uint16)[finite]).all()


def test_round_trip_of_every_pattern_is_identity():
    for dtype in (BF16, F16):
        src = ALL16.view(dtype)
        back = convert(convert(src, F32), dtype)
        nan = np.isnan(src.astype(np.float32))
        assert (back.view(np.uint16)[~nan] == ALL16[~nan]).all()
        assert np.isnan(back[nan].astype(np.float32)).all()


def test_hand_checked_values():
    x = np.array([1.0, 65520.0, 65504.0, 2.0 ** -25, 3 * 2.0 ** -25, -0.0, np.inf, np.nan], dtype=np.float32)
    h = convert(x, F16).view(np.uint16)
    assert list(h[:6]) == [0x3C00, 0x7C00, 0x7BFF, 0x0000, 0x0002, 0x8000]
    assert h[6] == 0x7C00 and (h[7] & 0x7C00) == 0x7C00 and (h[7] & 0x3FF) != 0
    b = convert(np.array([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 3.4e38], dtype=np.float32), BF16).view(np.uint16)
    assert list(b) == [0x3F80, 0x3F82, 0x7F80]


def test_public_round_to_keeps_shape_and_matches_ml_dtypes(rng):
    x = rng.standard_normal((3, 5)).astype(np.float32) * 1000
    for dtype in (BF16, F16):
        got = fattn.round_to(x, dtype)
        assert got.shape == x.shape and got.dtype == dtype
        assert (got.view(np.uint16) == x.astype(dtype).view(np.uint16)).all()
    with pytest.raises(TypeError, match="dtype must be one of"):
        fattn.round_to(x, np.int32)



def _correctly_rounded(x: np.ndarray, dtype) -> np.ndarray:
    """float64 -> dtype, nearest with ties to even, by search: the non-negative finite values
    of a 16-bit type, in pattern order, are increasing, so a value's pattern is its index; one
    virtual value past the largest (the next power of two, pattern = inf's) makes overflow an
    ordinary rounding. The two distances are exact in float64 (Sterbenz)."""
    inf_bits = int(np.array([np.inf], dtype=dtype).view(np.uint16)[0])
    vals = np.arange(inf_bits, dtype=np.uint16).view(dtype).astype(np.float64)
    vals = np.append(vals, 2.0 * float(2.0 ** np.floor(np.log2(vals[-1]))))
    ax = np.abs(x)
    lo = np.clip(np.searchsorted(vals, ax, side="right") - 1, 0, len(vals) - 2)
    d_lo, d_hi = ax - vals[lo], vals[lo + 1] - ax
    up = (d_hi < d_lo) | ((d_hi == d_lo) & (lo % 2 == 1))
    bits = (lo + up).astype(np.uint16) | np.where(np.signbit(x), 0x8000, 0).astype(np.uint16)
    bits = np.where(ax >= vals[-1], np.uint16(inf_bits) | (bits & 0x8000), bits)
    return bits.astype(np.uint16)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "f16"])
def test_round_to_float64_rounds_once(rng, dtype):
    # Where float64 -> float32 -> dtype rounds twice: just off the midpoints between neighbours.
    inf_bits = int(np.array([np.inf], dtype=dtype).view(np.uint16)[0])
    pats = rng.integers(0, inf_bits - 1, 4000).astype(np.uint16)
    a = pats.view(dtype).astype(np.float64)
    b = (pats + 1).astype(np.uint16).view(dtype).astype(np.float64)
    mid = (a + b) / 2
    nudges = [0.0, 1e-12, -1e-12, 2.0 ** -30, -(2.0 ** -30)]
    x = np.concatenate([mid * (1 + e) for e in nudges] + [np.nextafter(mid, 0), np.nextafter(mid, np.inf),
                                                           rng.standard_normal(2000) * 10.0 ** rng.integers(-9, 6, 2000)])
    x = np.concatenate([x, -x, [0.0, -0.0, np.inf, -np.inf, 1e300, -1e300, 5e-324]])
    got = fattn.round_to(x, dtype).view(np.uint16)
    want = _correctly_rounded(x, dtype)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{bad.size} wrong, e.g. x={x[bad[:3]]!r} got {got[bad[:3]]} want {want[bad[:3]]}"
    # ... and there are inputs on which the two-step route does differ, so the test can fail.
    with np.errstate(over="ignore"):
        assert (x.astype(np.float32).astype(dtype).view(np.uint16) != want).any()
    nan = fattn.round_to(np.array([np.nan, -np.nan]), dtype)
    assert np.isnan(nan.astype(np.float32)).all()
    with np.errstate(over="ignore"):
        assert (fattn.round_to(x, np.float32) == x.astype(np.float32)).all()
