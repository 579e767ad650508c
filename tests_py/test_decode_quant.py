"""flash_attn_vec on quantized KV caches (q8_0, q4_0; issue 20): bit for bit the decode of the
dequantized float32 caches, on every path, with every option, mixed freely with dense caches."""
import itertools

import numpy as np
import pytest

import fattn
from fattn import reference
from helpers import BF16, F16, F32, same_bits

FORMATS = ["q8_0", "q4_0"]
ALL_PATHS = fattn.available_isas(include_emulated=True)
ROW_BYTES = {"q8_0": 34, "q4_0": 18}  # per block of 32


class QuantCache:
    """fattn.quantize_kv's cache, with its dequantized values at hand."""

    def __init__(self, x, fmt):
        cache = fattn.quantize_kv(x, fmt)
        self.blocks, self.format, self.head_dim = cache.blocks, cache.format, cache.head_dim

    def values(self):
        return reference.dequantize_kv(self.blocks, self.format, self.head_dim)


class Blocks:
    """A quantized cache over given blocks (any strides)."""

    def __init__(self, blocks, fmt, head_dim):
        self.blocks, self.format, self.head_dim = blocks, fmt, head_dim


def values(cache):
    """What a cache stands for, in float32: the exact values every path must compute with."""
    return cache.values() if isinstance(cache, QuantCache) else cache.astype(F32)


# --- the NumPy dequantizer against the block definitions -----------------------------------------

def test_numpy_dequantizer_follows_the_block_layout(rng):
    # One hand-built block of each format: scale 0.5 (f16 0x3800), known integers.
    q8 = np.zeros(34, np.uint8)
    q8[:2] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
    q8[2:] = np.arange(-16, 16, dtype=np.int8).view(np.uint8)
    np.testing.assert_array_equal(reference.dequantize_kv(q8, "q8_0", 32), np.arange(-16, 16) * 0.5)
    q4 = np.zeros(18, np.uint8)
    q4[:2] = np.frombuffer(np.float16(-0.25).tobytes(), np.uint8)
    lo, hi = np.arange(16) % 16, (15 - np.arange(16)) % 16
    q4[2:] = lo | (hi << 4)
    want = np.concatenate([lo - 8, hi - 8]) * -0.25  # element j: low nibble of byte j; j + 16: high
    np.testing.assert_array_equal(reference.dequantize_kv(q4, "q4_0", 32), want)


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantized_values_are_close_to_the_input(rng, fmt):
    x = rng.standard_normal((2, 3, 40, 96)).astype(F32)
    c = QuantCache(x, fmt)
    assert c.blocks.dtype == np.uint8 and c.blocks.shape == (2, 3, 40, 96 // 32 * ROW_BYTES[fmt])
    amax = np.abs(x.reshape(2, 3, 40, 3, 32)).max(-1, keepdims=True)
    err = np.abs(c.values().reshape(x.shape[:-1] + (3, 32)) - x.reshape(2, 3, 40, 3, 32))
    # half a step of d = amax/127 (q8_0; q4_0: a whole step of amax/8 at the clamped end), plus the
    # stored scale's float16 rounding times the largest integer
    step = amax / 127 * (0.5 + 127 * 2.0 ** -11) if fmt == "q8_0" else amax / 8 * (1 + 8 * 2.0 ** -11)
    assert (err <= step * 1.001).all()


# --- bit-exact: the decode of the dequantized caches ---------------------------------------------

def cache_forms(x, dense_dtype):
    """x as each cache the decode takes: q8_0, q4_0, and dense in `dense_dtype`."""
    return {"q8_0": QuantCache(x, "q8_0"), "q4_0": QuantCache(x, "q4_0"), "dense": x.astype(dense_dtype)}


CASES = [  # (batched, H, H_kv, capacity, kv_seq_len, D)
    (False, 4, 4, 70, 70, 32),    # GQA 1, kv_seq_len = capacity
    (True, 4, 2, 300, 290, 128),  # GQA 2, spare capacity, no multiple of 32
    (False, 8, 2, 130, 97, 64),   # GQA 4
    (True, 2, 1, 40, 33, 512),    # D 512, one position past a chunk
    (False, 3, 1, 50, 45, 192),   # GQA 3, 3 plane segments of 64 (AVX-512's planes_scores)
    (False, 2, 2, 24, 21, 448),   # 7 segments: the K planes spill registers
]
OPTIONS = [
    dict(nwg=1),
    dict(nwg=3, mask="causal"),
    dict(nwg=32, mask="sliding_window", window=37),
    dict(nwg=64, mask="sliding_window", window=5000, softcap=5.0),
    dict(nwg=5, sinks="yes", mask="sliding_window", window=40),
]


@pytest.mark.parametrize("isa", ALL_PATHS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{'B' if c[0] else ''}H{c[1]}x{c[2]}-cap{c[3]}-kv{c[4]}-D{c[5]}")
def test_quantized_caches_give_the_dequantized_caches_bits(rng, restore_isa, isa, case):
    batched, h, h_kv, capacity, kv_len, d = case
    lead = (2,) if batched else ()
    q = rng.standard_normal(lead + (h, d)).astype(F32)
    k, v = (rng.standard_normal(lead + (h_kv, capacity, d)).astype(F32) * 2 for _ in range(2))
    dense = [F32, F16, BF16][d // 32 % 3]
    ks, vs = cache_forms(k, dense), cache_forms(v, dense)
    sinks = rng.uniform(-3, 3, h).astype(F32)
    sinks[0] = -np.inf
    for kf, vf in itertools.product(ks, vs):
        if kf == vf == "dense":
            continue
        kc, vc = ks[kf], vs[vf]
        k32, v32 = values(kc), values(vc)
        for opts, ring in itertools.product(OPTIONS, (None, capacity // 2 + 1)):
            kw = dict(opts, kv_seq_len=kv_len, ring_start=ring)
            if kw.get("sinks") is not None:
                kw["sinks"] = sinks
            fattn.set_isa("scalar")
            want = fattn.flash_attn_vec(q, k32, v32, **kw)
            want_parts = fattn.flash_attn_vec_partials(q, k32, v32, **kw)
            fattn.set_isa(isa)
            got = fattn.flash_attn_vec(q, kc, vc, **kw)
            assert same_bits(got, want), (kf, vf, kw.keys(), np.abs(got - want).max())
            parts = fattn.flash_attn_vec_partials(q, kc, vc, **kw)
            assert all(same_bits(a, b) for a, b in zip(parts, want_parts)), (kf, vf, kw.keys())


@pytest.mark.parametrize("isa", ALL_PATHS)
@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_a_dense_cache_computes_with_its_values_widened(rng, restore_isa, isa, dtype):
    # Why a mixed call is "every cache widened exactly to float32": a float16/bfloat16 cache gives
    # the bits of the float32 cache holding the same values, on every path.
    fattn.set_isa(isa)
    q = rng.standard_normal((2, 8, 128)).astype(F32)
    k, v = (rng.standard_normal((2, 4, 200, 128)).astype(dtype) for _ in range(2))
    for kw in (dict(nwg=7), dict(nwg=32, mask="sliding_window", window=50, softcap=3.0, ring_start=20)):
        narrow = fattn.flash_attn_vec(q, k, v, kv_seq_len=190, **kw)
        wide = fattn.flash_attn_vec(q, k.astype(F32), v.astype(F32), kv_seq_len=190, **kw)
        assert same_bits(narrow, wide)


def test_return_lse_and_merge_with_quantized_caches(rng):
    q = rng.standard_normal((4, 64)).astype(F32)
    k, v = (rng.standard_normal((2, 100, 64)).astype(F32) for _ in range(2))
    kc, vc = QuantCache(k, "q4_0"), QuantCache(v, "q8_0")
    out, lse = fattn.flash_attn_vec(q, kc, vc, kv_seq_len=90, return_lse=True)
    want, want_lse = fattn.flash_attn_vec(q, kc.values(), vc.values(), kv_seq_len=90, return_lse=True)
    assert same_bits(out, want) and same_bits(lse, want_lse)
    # the same cache, split in two halves of the positions and merged: the whole
    first = fattn.flash_attn_vec(q, QuantCache(k[:, :40], "q4_0"), QuantCache(v[:, :40], "q8_0"), kv_seq_len=40,
                                 return_lse=True)
    second = fattn.flash_attn_vec(q, QuantCache(k[:, 40:90], "q4_0"), QuantCache(v[:, 40:90], "q8_0"),
                                  kv_seq_len=50, return_lse=True)
    merged = fattn.merge_attention([first[0], second[0]], [first[1], second[1]])
    np.testing.assert_allclose(merged, out, rtol=0, atol=1e-5 * np.abs(out).max())


def test_out_argument_with_quantized_caches(rng):
    q = rng.standard_normal((2, 4, 64)).astype(F32)
    kc = QuantCache(rng.standard_normal((2, 2, 50, 64)).astype(F32), "q8_0")
    v = rng.standard_normal((2, 2, 50, 64)).astype(F16)
    out = np.full((2, 4, 64), np.nan, F32)
    assert fattn.flash_attn_vec(q, kc, v, kv_seq_len=45, out=out) is out
    assert same_bits(out, fattn.flash_attn_vec(q, kc.values(), v.astype(F32), kv_seq_len=45))


@pytest.mark.parametrize("fmt", FORMATS)
def test_unused_capacity_is_never_read(rng, restore_isa, fmt):
    # Rows at or past kv_seq_len (by slot, with a ring) may hold any bytes: 0xFF makes the scale a
    # NaN, which would reach the output if any such row were read.
    q = rng.standard_normal((4, 64)).astype(F32)
    k, v = (rng.standard_normal((2, 100, 64)).astype(F32) for _ in range(2))
    kc, vc = QuantCache(k, fmt), QuantCache(v, fmt)
    want = fattn.flash_attn_vec(q, kc, vc, kv_seq_len=70)
    for r, isa in itertools.product((0, 31, 60, 99), ALL_PATHS):
        fattn.set_isa(isa)
        kr, vr = (Blocks(np.ascontiguousarray(np.roll(c.blocks, r, axis=-2)), fmt, 64) for c in (kc, vc))
        unused = (r + np.arange(70, 100)) % 100
        kr.blocks[:, unused] = 0xFF
        vr.blocks[:, unused] = 0xFF
        got = fattn.flash_attn_vec(q, kr, vr, kv_seq_len=70, ring_start=r)
        assert same_bits(got, want), (r, isa)


@pytest.mark.parametrize("isa", ALL_PATHS)
def test_non_finite_scales_match_the_scalar_model(rng, restore_isa, isa):
    # Scales that are inf, a quiet NaN or a signalling NaN (whose payload a vector F16C conversion
    # would quiet): every path gives the scalar model's bits, NaN payloads included.
    q = rng.standard_normal((4, 64)).astype(F32)
    k, v = (rng.standard_normal((2, 100, 64)).astype(F32) for _ in range(2))
    for fmt in FORMATS:
        kc, vc = QuantCache(k, fmt), QuantCache(v, fmt)
        for pattern in (0x7C00, 0xFC00, 0x7E01, 0x7C01, 0xFD55):
            kb, vb = kc.blocks.copy(), vc.blocks.copy()
            kb[1, 37, :2] = np.frombuffer(np.uint16(pattern).tobytes(), np.uint8)
            vb[0, 70, ROW_BYTES[fmt]:ROW_BYTES[fmt] + 2] = np.frombuffer(np.uint16(pattern ^ 0x8000).tobytes(),
                                                                          np.uint8)
            args = (q, Blocks(kb, fmt, 64), Blocks(vb, fmt, 64))
            fattn.set_isa("scalar")
            want = fattn.flash_attn_vec_partials(*args, kv_seq_len=90, nwg=3)
            fattn.set_isa(isa)
            got = fattn.flash_attn_vec_partials(*args, kv_seq_len=90, nwg=3)
            assert all(same_bits(a, b) for a, b in zip(got, want)), (fmt, hex(pattern))


def test_strided_and_batched_blocks_are_read_in_place_or_copied(rng):
    # Blocks that are a slice of a larger cache (position and head strides of their own), a
    # non-contiguous last axis (copied once), and a zero-stride batch.
    q = rng.standard_normal((2, 4, 64)).astype(F32)
    x = rng.standard_normal((2, 2, 80, 64)).astype(F32)
    big = QuantCache(x, "q4_0")
    want = fattn.flash_attn_vec(q, big.values()[:, :, 10:60], big.values()[:, :, 10:60], kv_seq_len=45)
    sliced = Blocks(big.blocks[:, :, 10:60], "q4_0", 64)
    assert not sliced.blocks.flags.c_contiguous
    assert same_bits(fattn.flash_attn_vec(q, sliced, sliced, kv_seq_len=45), want)
    padded = np.zeros(big.blocks.shape[:-1] + (2 * big.blocks.shape[-1],), np.uint8)
    padded[..., ::2] = big.blocks
    gapped = Blocks(padded[..., ::2][:, :, 10:60], "q4_0", 64)
    assert same_bits(fattn.flash_attn_vec(q, gapped, gapped, kv_seq_len=45), want)
    one = QuantCache(x[:1], "q8_0")
    shared = Blocks(np.broadcast_to(one.blocks, (2,) + one.blocks.shape[1:]), "q8_0", 64)
    vals = np.broadcast_to(one.values(), (2,) + one.values().shape[1:])
    assert same_bits(fattn.flash_attn_vec(q, shared, shared, kv_seq_len=70),
                     fattn.flash_attn_vec(q, np.ascontiguousarray(vals), np.ascontiguousarray(vals), kv_seq_len=70))


# --- the NumPy reference takes the same caches ---------------------------------------------------

@pytest.mark.parametrize("kf, vf", [("q8_0", "q8_0"), ("q4_0", "dense"), ("dense", "q4_0")])
def test_reference_accepts_quantized_caches(rng, kf, vf):
    q = rng.standard_normal((2, 4, 128)).astype(F32)
    k, v = (rng.standard_normal((2, 2, 150, 128)).astype(F32) for _ in range(2))
    kc = cache_forms(k, F16)[kf]
    vc = cache_forms(v, F16)[vf]
    kw = dict(kv_seq_len=140, mask="sliding_window", window=90, nwg=4, ring_start=33)
    model = reference.flash_attn_vec(q, kc, vc, **kw)
    assert same_bits(model, reference.flash_attn_vec(q, values(kc), values(vc), **kw))
    out = fattn.flash_attn_vec(q, kc, vc, **kw)
    assert np.abs(out - model).max() <= 1e-5 * np.abs(model).max()
    o, s, m = reference.flash_attn_vec_partials(q, kc, vc, **kw)
    assert o.shape == (2, 4, 4, 128) and s.shape == m.shape == (2, 4, 4)
