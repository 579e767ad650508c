"""Quantized caches: fattn.quantize_kv / QuantizedCache against ggml's published block
definitions, byte for byte.

Three implementations meet here: fattn (C++), fattn.reference (vectorised NumPy) and
`ggml_block` below, a per-element transcription of the block definitions (block_q8_0: a
little-endian float16 scale, then 32 int8; block_q4_0: the scale, then 16 bytes of nibbles,
element j low and element j + 16 high) using NumPy float32 scalars for the arithmetic and
Python's struct for the float16 scale (its own round-to-nearest-even)."""
import math
import struct

import numpy as np
import pytest

import fattn
from fattn import reference
from helpers import BF16, F16, F32

FORMATS = ["q8_0", "q4_0"]
f32 = np.float32


def _inverse(d):
    """1/d in float32; 0 for d = 0 and where 1/d overflows (fattn's rule for those tiny blocks)."""
    if d == 0:
        return f32(0)
    with np.errstate(over="ignore"):
        inv = f32(1) / d
    return f32(0) if math.isinf(inv) else inv


def ggml_block(x, fmt):
    """One block of 32 float32 values -> its bytes, element by element."""
    assert len(x) == 32
    x = [f32(v) for v in x]
    if fmt == "q8_0":
        amax = f32(0)
        for v in x:
            amax = max(amax, f32(abs(v)))
        d = f32(amax / f32(127))
        inv = _inverse(d)
        qs = []
        for v in x:
            t = float(f32(v * inv))  # rounded to float32, then half away from zero (roundf)
            qs.append(int(math.copysign(math.floor(abs(t) + 0.5), t)))
        return struct.pack("<e", float(d)) + struct.pack("<32b", *qs)
    amax, m = f32(0), f32(0)
    for v in x:
        if amax < abs(v):
            amax, m = f32(abs(v)), v
    d = f32(m / f32(-8))
    inv = _inverse(d)
    qs = [min(15, math.trunc(float(f32(f32(v * inv) + f32(8.5))))) for v in x]
    return struct.pack("<e", float(d)) + bytes(qs[j] | qs[j + 16] << 4 for j in range(16))


def ggml_rows(x, fmt):
    """x [..., D] -> uint8 [..., bytes_per_row] through ggml_block."""
    x = np.asarray(x).astype(np.float32)
    rows = x.reshape(-1, x.shape[-1])
    out = [b"".join(ggml_block(r[k:k + 32], fmt) for k in range(0, len(r), 32)) for r in rows]
    return np.frombuffer(b"".join(out), np.uint8).reshape(x.shape[:-1] + (-1,))


def check_bytes(x, fmt, expected=None):
    """fattn and the reference give the same bytes, and ggml_block's (or `expected`'s)."""
    got = fattn.quantize_kv(x, fmt).blocks
    want = ggml_rows(x, fmt) if expected is None else np.frombuffer(expected, np.uint8).reshape(got.shape)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(reference.quantize_kv(x, fmt), want)
    return got


# --- hand-built blocks: the rounding boundaries ---------------------------------------------

def q8_block(scale, qs):
    return struct.pack("<e", scale) + struct.pack("<32b", *qs)


def q4_block(scale, qs):
    return struct.pack("<e", scale) + bytes(qs[j] | qs[j + 16] << 4 for j in range(16))


def test_q8_0_ties_round_away_from_zero():
    # d = 127 / 127 = 1, 1/d = 1: x * 1/d = x exactly; k + 0.5 goes away from zero.
    x = np.zeros(32, F32)
    vals = [127, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -126.5, 0.49999997, -0.49999997, 64.5, -64.5, 3.25]
    want = [127, 1, -1, 2, -2, 3, -3, 127, -127, 0, 0, 65, -65, 3]
    qs = [0] * 32
    for i, (v, q) in enumerate(zip(vals, want)):
        x[2 * i + 1] = v
        qs[2 * i + 1] = q
    check_bytes(x[None], "q8_0", q8_block(1.0, qs))
    # d = 2, 1/d = 0.5: 5 -> 2.5 -> 3; 1 -> 0.5 -> 1.
    y = np.ones(32, F32)
    y[[0, 1, 2]] = [-254, 5, -5]
    check_bytes(y[None], "q8_0", q8_block(2.0, [-127, 3, -3] + [1] * 29))


@pytest.mark.parametrize("sign", [1, -1])
def test_q8_0_one_outlier(sign):
    # d = 1270 / 127 = 10; 1/d = 0.1f: 5 * 0.1f rounds to 0.5 in float32, then to 1.
    x = np.full(32, 4, F32)
    x[[5, 6, 7, 8]] = [sign * 1270, 5, -15, 635]
    qs = [0] * 32
    qs[5:9] = [sign * 127, 1, -2, 64]
    check_bytes(x[None], "q8_0", q8_block(10.0, qs))


def test_q4_0_truncation_lands_on_integers():
    # m = -8 first: d = 1, 1/d = 1; x = q - 8 gives q + 0.5 -> q; +-0.5 land exactly on 9 and 8;
    # 0.49999997 + 8.5 rounds to 9.0 in float32 before the truncation; 7.5 -> 16 is clipped to 15.
    qs = [(7 * j + 3) % 16 for j in range(32)]
    x = np.array([q - 8 for q in qs], F32)
    x[0], qs[0] = -8, 0
    for j, v, q in [(5, 0.5, 9), (6, -0.5, 8), (20, 0.49999997, 9), (21, -0.49999997, 8), (22, 7.5, 15),
                    (23, 7.0, 15), (24, -7.5, 1)]:
        x[j], qs[j] = v, q
    check_bytes(x[None], "q4_0", q4_block(1.0, qs))


def test_q4_0_product_then_sum():
    # m = -24: d = 3, 1/d = 0.33333334f; -22.5 * 1/d rounds to -7.5 and + 8.5 = 1.0 -> 1 (a fused
    # multiply-add would give 0.99999976 -> 0).
    x = np.zeros(32, F32)
    x[[0, 1, 17]] = [-24, -22.5, 22.5]
    qs = [8] * 32
    qs[0], qs[1], qs[17] = 0, 1, 15
    check_bytes(x[None], "q4_0", q4_block(3.0, qs))


def test_q4_0_first_of_equal_magnitudes():
    # +8 first: d = -1, so +8 -> 0 and -8 -> 16.5 -> 15 (clipped); -8 first: d = +1.
    x = np.zeros(32, F32)
    qs = [8] * 32
    qs[3], qs[19] = 0, 15
    x[[3, 19]] = [8, -8]
    check_bytes(x[None], "q4_0", q4_block(-1.0, qs))
    x[[3, 19]] = [-8, 8]
    check_bytes(x[None], "q4_0", q4_block(1.0, qs))
    # Many equal magnitudes of both signs: the first decides.
    rng = np.random.default_rng(5)
    for _ in range(50):
        signs = rng.choice([-1.0, 1.0], 32).astype(F32)
        y = signs * 3
        y[rng.integers(0, 32, 5)] *= f32(0.25)
        blocks = check_bytes(y[None], "q4_0")
        scale = struct.unpack("<e", blocks[0, :2].tobytes())[0]
        first = int(np.flatnonzero(np.abs(y) == 3)[0])
        assert scale == -y[first] / 8


@pytest.mark.parametrize("fmt", FORMATS)
def test_outliers_in_random_blocks(fmt):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((64, 32)).astype(F32)
    idx = rng.integers(0, 32, 64)
    x[np.arange(64), idx] = rng.choice([-1, 1], 64) * rng.uniform(50, 5000, 64)
    check_bytes(x, fmt)


def test_zero_and_tiny_blocks():
    zero = np.zeros((2, 64), F32)
    zero[1] = -0.0
    check_bytes(zero, "q8_0", q8_block(0.0, [0] * 32) * 4)
    # q4_0: m keeps its initial +0, so d = +0 / -8 = -0 whatever the zeros' signs; nibbles 8.
    check_bytes(zero, "q4_0", q4_block(-0.0, [8] * 32) * 4)
    # 1/d overflows float32 (ggml's reference is undefined there): an all-zero block.
    tiny = np.zeros(32, F32)
    tiny[[4, 5]] = [1e-39, -3e-40]
    check_bytes(tiny[None], "q8_0", q8_block(0.0, [0] * 32))
    check_bytes(tiny[None], "q4_0", q4_block(-0.0, [8] * 32))
    # Just above: 1/d finite, q = 127 with a scale that rounds to 0 in float16.
    small = np.zeros(32, F32)
    small[0] = np.ldexp(f32(127), -127)
    check_bytes(small[None], "q8_0", q8_block(0.0, [127] + [0] * 31))
    # Scales in float16's subnormal range round (to nearest even) like any other.
    sub = (np.random.default_rng(3).standard_normal((16, 32)) * 1e-5).astype(F32)
    for fmt in FORMATS:
        check_bytes(sub, fmt)


def test_scale_range_edges():
    x = np.zeros((1, 32), F32)
    x[0, 2] = 65504 * 127
    b = check_bytes(x, "q8_0", q8_block(65504.0, [0, 0, 127] + [0] * 29))
    assert fattn.QuantizedCache.from_blocks(b, "q8_0", head_dim=32).dequantize()[0, 2] == 65504 * 127
    x[0, 2] = -65504 * 8
    check_bytes(x, "q4_0", q4_block(65504.0, [8, 8, 0] + [8] * 29))
    with pytest.raises(ValueError, match=r"x: every value must be finite with \|x\| <= 65504 \* 8 for q4_0"):
        fattn.quantize_kv(np.nextafter(x, f32(-np.inf)), "q4_0")
    x[0, 2] = np.nextafter(f32(65504 * 127), f32(np.inf))
    with pytest.raises(ValueError, match=r"65504 \* 127 for q8_0 .*at \[0, 0, 0, 2\]"):
        fattn.quantize_kv(x, "q8_0")


# --- random data: many shapes, every input dtype --------------------------------------------

SHAPES = [(1, 32), (7, 64), (3, 5, 96), (2, 3, 4, 128), (1, 1, 2, 256), (2, 1, 3, 32)]


def random_x(rng, shape, dtype):
    """Gaussian rows at scales from 1e-6 to 1e4, with exact zeros, halves and repeated values."""
    x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 4, shape[:-1] + (1,))
    x[..., ::7] = np.round(x[..., ::7] * 2) / 2
    x[..., 1::11] = 0
    return x.astype(dtype)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [F32, F16, BF16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_random_bytes_match_ggml(fmt, dtype, shape):
    x = random_x(np.random.default_rng(hash((fmt, str(dtype), shape)) % 2 ** 32), shape, dtype)
    blocks = check_bytes(x, fmt)
    assert blocks.shape == shape[:-1] + (reference.quant_row_bytes(fmt, shape[-1]),)
    # A float16/bfloat16 input is its exact float32 widening.
    np.testing.assert_array_equal(fattn.quantize_kv(x.astype(F32), fmt).blocks, blocks)


@pytest.mark.parametrize("fmt", FORMATS)
def test_many_blocks_match_the_reference(fmt):
    """A larger sweep (fattn against the vectorised reference only)."""
    rng = np.random.default_rng(99)
    for dtype in (F32, F16, BF16):
        x = random_x(rng, (4, 8, 64, 128), dtype)
        np.testing.assert_array_equal(fattn.quantize_kv(x, fmt).blocks, reference.quantize_kv(x, fmt))


# --- the cache object ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_attributes(fmt):
    x = random_x(np.random.default_rng(1), (2, 3, 10, 64), F16)
    c = fattn.quantize_kv(x, fmt)
    assert isinstance(c, fattn.QuantizedCache)
    assert c.format == fmt and c.head_dim == 64 and c.shape == (2, 3, 10, 64)
    assert isinstance(c.shape, tuple) and isinstance(c.head_dim, int)
    width = {"q8_0": 68, "q4_0": 36}[fmt]
    assert c.blocks.dtype == np.uint8 and c.blocks.shape == (2, 3, 10, width) and c.bytes_per_row == width
    assert c.blocks.flags.writeable and c.blocks.flags.c_contiguous
    assert fmt in repr(c)
    for shape in [(5, 32), (4, 5, 32)]:
        assert fattn.quantize_kv(np.zeros(shape, F32), fmt).shape == shape


def dequantize_by_hand(blocks, fmt, head_dim):
    """Each element q * d in float64 from the raw bytes (struct for the float16 scale)."""
    per = 34 if fmt == "q8_0" else 18
    rows = np.asarray(blocks).reshape(-1, blocks.shape[-1])
    out = np.empty((len(rows), head_dim))
    for r, row in enumerate(rows):
        for k in range(head_dim // 32):
            blk = row[k * per:(k + 1) * per].tobytes()
            d = struct.unpack("<e", blk[:2])[0]
            if fmt == "q8_0":
                qs = struct.unpack("<32b", blk[2:])
            else:
                qs = [b & 15 for b in blk[2:]] + [b >> 4 for b in blk[2:]]
                qs = [q - 8 for q in qs]
            out[r, k * 32:(k + 1) * 32] = np.array(qs, np.float64) * d
    return out.reshape(blocks.shape[:-1] + (head_dim,))


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_is_exact(fmt):
    rng = np.random.default_rng(7)
    x = random_x(rng, (3, 6, 64), F32)
    c = fattn.quantize_kv(x, fmt)
    y = c.dequantize()
    assert y.dtype == np.float32 and y.shape == x.shape
    want = dequantize_by_hand(c.blocks, fmt, 64)
    np.testing.assert_array_equal(y.astype(np.float64), want)  # q * d is exact in float32
    np.testing.assert_array_equal(reference.dequantize_kv(c.blocks, fmt, 64), y)
    # Random bytes (finite scales): any pattern is a block.
    raw = rng.integers(0, 256, (5, 4, c.bytes_per_row), dtype=np.uint8)
    per = 34 if fmt == "q8_0" else 18
    for k in range(2):
        raw[..., k * per + 1] &= 0x7B  # exponent never all ones
    r = fattn.QuantizedCache.from_blocks(raw, fmt, head_dim=64)
    np.testing.assert_array_equal(r.dequantize().astype(np.float64), dequantize_by_hand(raw, fmt, 64))


@pytest.mark.parametrize("fmt", FORMATS)
def test_from_blocks_round_trip_and_views(fmt):
    x = random_x(np.random.default_rng(2), (2, 4, 9, 64), BF16)
    c = fattn.quantize_kv(x, fmt)
    again = fattn.QuantizedCache.from_blocks(c.blocks, fmt, head_dim=64)
    assert again.blocks is c.blocks and again.shape == c.shape
    np.testing.assert_array_equal(again.dequantize().view(np.uint32), c.dequantize().view(np.uint32))
    # Strided rows (padding after each row), a read-only buffer, fewer leading axes.
    padded = np.zeros(c.blocks.shape[:-1] + (c.bytes_per_row + 5,), np.uint8)
    padded[..., :c.bytes_per_row] = c.blocks
    view = padded[..., :c.bytes_per_row]
    np.testing.assert_array_equal(fattn.QuantizedCache.from_blocks(view, fmt, head_dim=64).dequantize(),
                                  c.dequantize())
    ro = np.frombuffer(c.blocks.tobytes(), np.uint8).reshape(c.blocks.shape)
    assert not ro.flags.writeable
    np.testing.assert_array_equal(fattn.QuantizedCache.from_blocks(ro, fmt, head_dim=64).dequantize(),
                                  c.dequantize())
    np.testing.assert_array_equal(fattn.QuantizedCache.from_blocks(c.blocks[1, 2], fmt, head_dim=64).dequantize(),
                                  c.dequantize()[1, 2])
    np.testing.assert_array_equal(fattn.QuantizedCache.from_blocks(c.blocks[1], fmt, head_dim=64).dequantize(),
                                  c.dequantize()[1])
    # Reversed positions (a negative stride).
    np.testing.assert_array_equal(
        fattn.QuantizedCache.from_blocks(c.blocks[:, :, ::-1], fmt, head_dim=64).dequantize(),
        c.dequantize()[:, :, ::-1])


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_written_in_place(fmt):
    """A decode loop appends rows through c.blocks; the cache then equals the whole quantized."""
    rng = np.random.default_rng(4)
    x = random_x(rng, (2, 8, 64), F16)
    cache = fattn.quantize_kv(np.zeros_like(x), fmt)
    for p in range(8):
        cache.blocks[..., p, :] = fattn.quantize_kv(x[:, p:p + 1, :], fmt).blocks[..., 0, :]
    whole = fattn.quantize_kv(x, fmt)
    np.testing.assert_array_equal(cache.blocks, whole.blocks)
    np.testing.assert_array_equal(cache.dequantize(), whole.dequantize())
    # A cache wrapped with from_blocks sees the writes made through its array.
    buf = np.zeros_like(whole.blocks)
    wrapped = fattn.QuantizedCache.from_blocks(buf, fmt, head_dim=64)
    buf[:, 3] = whole.blocks[:, 3]
    np.testing.assert_array_equal(wrapped.dequantize()[:, 3], whole.dequantize()[:, 3])


class DLPackOnly:
    """An object that exposes only __dlpack__ (as a torch tensor does)."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


@pytest.mark.parametrize("fmt", FORMATS)
def test_input_kinds(fmt):
    rng = np.random.default_rng(8)
    x = random_x(rng, (3, 4, 64), F32)
    want = fattn.quantize_kv(x, fmt).blocks
    np.testing.assert_array_equal(fattn.quantize_kv(DLPackOnly(x), fmt).blocks, want)
    np.testing.assert_array_equal(fattn.quantize_kv(memoryview(x), fmt).blocks, want)
    wide = np.repeat(x, 2, axis=-1)[..., ::2]  # last axis not contiguous: copied first
    assert wide.strides[-1] != 4
    np.testing.assert_array_equal(fattn.quantize_kv(wide, fmt).blocks, want)
    np.testing.assert_array_equal(fattn.quantize_kv(x.transpose(1, 0, 2), fmt).blocks, want.transpose(1, 0, 2))
    blocks = fattn.quantize_kv(x, fmt).blocks
    np.testing.assert_array_equal(
        fattn.QuantizedCache.from_blocks(DLPackOnly(blocks), fmt, head_dim=64).dequantize(),
        fattn.QuantizedCache.from_blocks(blocks, fmt, head_dim=64).dequantize())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [F32, F16, BF16], ids=str)
def test_non_finite_rejected(fmt, bad, dtype):
    x = np.ones((2, 3, 64), dtype)
    x[1, 2, 40] = bad
    with pytest.raises(ValueError, match=r"x: every value must be finite .* at \[0, 1, 2, 40\]"):
        fattn.quantize_kv(x, fmt)
    with pytest.raises(ValueError, match="x: every value must be finite"):
        reference.quantize_kv(x, fmt)


def test_unimplemented_formats():
    for fmt in ("affine4",):
        with pytest.raises(ValueError, match=f"format: '{fmt}' is not implemented yet"):
            fattn.quantize_kv(np.ones((2, 32), F32), fmt)
        with pytest.raises(ValueError, match=f"format: '{fmt}' is not implemented yet"):
            fattn.QuantizedCache.from_blocks(np.zeros((2, 34), np.uint8), fmt, head_dim=32)


# --- the quantization error on Gaussian data (docs/numerics.md, "Quantized caches") ---------

def test_error_on_gaussian_data():
    """The per-element error stays within the rounding step (q8_0: d/2 plus the float16 scale's
    rounding, d = max|x|/127; q4_0: one step d = max|x|/8 at worst, the clipped +m side), and the
    measured RMS errors are the ones docs/numerics.md states."""
    rng = np.random.default_rng(2024)
    x = rng.standard_normal((4096, 128)).astype(F32)
    blocks = x.reshape(-1, 32).astype(np.float64)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    stats = {}
    for fmt in FORMATS:
        err = (fattn.quantize_kv(x, fmt).dequantize().astype(np.float64) - x).reshape(-1, 32)
        rel = np.abs(err) / amax
        limit = (0.5 + 127 * 2.0 ** -11) / 127 if fmt == "q8_0" else (1 + 8 * 2.0 ** -11) / 8
        assert rel.max() <= limit * (1 + 1e-6), (fmt, rel.max())
        stats[fmt] = (np.sqrt((err ** 2).mean()), rel.max(),
                      np.sqrt((err ** 2).sum(axis=1) / (blocks ** 2).sum(axis=1)).mean())
    rms8, max8, relrms8 = stats["q8_0"]
    rms4, max4, relrms4 = stats["q4_0"]
    assert 0.0053 < rms8 < 0.0055 and 0.0042 < max8 < 0.0044 and 0.0052 < relrms8 < 0.0054, stats["q8_0"]
    assert 0.085 < rms4 < 0.087 and 0.1250 < max4 < 0.1255 and 0.084 < relrms4 < 0.086, stats["q4_0"]
