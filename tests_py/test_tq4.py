"""tq4, mlx-native's TurboQuant 4-bit KV rows (issue 20; docs/numerics.md §9): the quantizer
byte for byte against the NumPy model and against answers worked out from the format's
definition; the decode bit for bit against its own model (rotate Q, decode the rotated values,
rotate each group's output back) on every path, and within the documented bound of the exact
attention over the dequantized cache."""
import numpy as np
import pytest

import fattn
from fattn import bounds, reference
from helpers import BF16, F16, F32, same_bits

DIMS = [32, 64, 128, 256, 512]
ALL_PATHS = fattn.available_isas(include_emulated=True)


def norms_of(blocks, d):
    return np.ascontiguousarray(blocks[..., d // 2:]).view("<f4")


# --- the quantizer -----------------------------------------------------------------------------

@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("dtype", [F32, F16, BF16])
def test_bytes_equal_the_numpy_model(rng, d, dtype):
    x = rng.standard_normal((2, 3, 50, d)) * rng.uniform(1e-3, 1e3, (2, 3, 50, 1))
    x[0, 0, 0] = 0                       # an all-zero row
    x[0, 0, 1, d // 3] = 5e4             # one large outlier
    x[0, 0, 2] = 1e-12                   # a norm below 1e-10: every code 7, as the kernel's zero branch
    x = x.astype(dtype)
    c = fattn.quantize_kv(x, "tq4")
    want = reference.quantize_kv(x, "tq4")
    assert c.blocks.shape == (2, 3, 50, reference.quant_row_bytes("tq4", d))
    assert same_bits(c.blocks, want)
    assert same_bits(c.dequantize(), reference.dequantize_kv(want, "tq4", d))


def test_known_rows_from_the_definition():
    # D = 64 (no sign flips): e_0 rotates to 1/8 everywhere, norm 1, u = (1/8 / 1) * 8 = 1:
    # index 11 (boundaries -2.40 .. 0.7995 lie below 1.0, 1.0993 does not).
    e0 = np.zeros(64, F32)
    e0[0] = 1
    b = fattn.quantize_kv(e0[None], "tq4").blocks[0]
    assert (b[:32] == 0xBB).all() and norms_of(b, 64)[0] == 1.0
    # It reads back as centroid 11 at coordinate 0 (the inverse transform of a constant row).
    back = fattn.QuantizedCache.from_blocks(b[None], "tq4", head_dim=64).dequantize()[0]
    np.testing.assert_allclose(back, np.where(np.arange(64) == 0, 0.9423405, 0.0), atol=1e-6)
    # e_0 + e_1: even coordinates 1/4, odd ones exactly 0, norm sqrt(2); u = sqrt(2) at even
    # coordinates (index 12) and exactly the boundary 0 at odd ones: a tie goes to the lower
    # centroid (u > b), index 7.
    x = np.zeros(64, F32)
    x[:2] = 1
    b = fattn.quantize_kv(x[None], "tq4").blocks[0]
    assert (b[:32] == (12 | 7 << 4)).all() and norms_of(b, 64)[0] == np.sqrt(np.float32(2))
    # D = 256: coordinate 0's sign bit is set (0xa7 & 1), so e_0 rotates to -1/16 everywhere;
    # u = -1 * ((1/1) * 16) / 16 = -1: index 4 (-1.0993 < -1 < -0.7995).
    e0 = np.zeros(256, F32)
    e0[0] = 1
    b = fattn.quantize_kv(e0[None], "tq4").blocks[0]
    assert (b[:128] == 0x44).all() and norms_of(b, 256)[0] == 1.0
    # D = 512: two half RMS norms (each |1/sqrt(512)| rounded), the same index 4 everywhere.
    e0 = np.zeros(512, F32)
    e0[0] = 1
    b = fattn.quantize_kv(e0[None], "tq4").blocks[0]
    assert (b[:256] == 0x44).all()
    np.testing.assert_allclose(norms_of(b, 512), [1 / np.sqrt(512)] * 2, rtol=1e-6)
    # An all-zero row: norm 0, u = 0 -> index 7 (0 is not above the boundary 0).
    b = fattn.quantize_kv(np.zeros((1, 128), F32), "tq4").blocks[0]
    assert (b[:64] == 0x77).all() and norms_of(b, 128)[0] == 0.0


def test_the_numpy_rotation_is_orthonormal():
    for d in DIMS:
        eye = np.eye(d, dtype=F32)
        r = reference.tq4_rotate(eye).astype(np.float64)
        np.testing.assert_allclose(r @ r.T, np.eye(d), atol=1e-6)
        np.testing.assert_allclose(reference.tq4_unrotate(reference.tq4_rotate(eye)), eye, atol=1e-6)


@pytest.mark.parametrize("d", DIMS)
def test_quantization_error_on_gaussian_rows_is_the_lloyd_max_distortion(rng, d):
    # A rotated Gaussian row's coordinates are near N(0, 1) after the norm scaling, so the
    # relative squared error is close to the 4-bit Lloyd-Max distortion of N(0, 1), 0.009497.
    x = rng.standard_normal((4000, d)).astype(F32)
    xd = fattn.quantize_kv(x, "tq4").dequantize()
    rel = float(((xd - x) ** 2).sum() / (x ** 2).sum())
    assert 0.0085 < rel < 0.0105, rel


def test_blocks_round_trip_and_append_in_place(rng):
    x = rng.standard_normal((2, 16, 128)).astype(F32)
    c = fattn.quantize_kv(x, "tq4")
    w = fattn.QuantizedCache.from_blocks(c.blocks.copy(), "tq4", head_dim=128)
    assert w.format == "tq4" and w.shape == (2, 16, 128) and w.bytes_per_row == 68
    assert same_bits(w.dequantize(), c.dequantize())
    row = rng.standard_normal((2, 1, 128)).astype(F32)
    w.blocks[:, 5:6] = fattn.quantize_kv(row, "tq4").blocks
    assert same_bits(w.dequantize()[:, 5], fattn.quantize_kv(row, "tq4").dequantize()[:, 0])


def test_bad_tq4_inputs():
    with pytest.raises(ValueError, match="x: tq4 needs a head dim D that is a power of two from 32 to 512"):
        fattn.quantize_kv(np.ones((2, 96), F32), "tq4")
    with pytest.raises(ValueError, match=r"x: every value must be finite with \|x\| <= 2\^50 for tq4"):
        fattn.quantize_kv(np.full((2, 64), np.inf, F32), "tq4")
    with pytest.raises(ValueError, match="blocks: the last axis must be 36 bytes"):
        fattn.QuantizedCache.from_blocks(np.zeros((2, 34), np.uint8), "tq4", head_dim=64)
    with pytest.raises(ValueError, match="tq4 needs a head dim D that is a power of two"):
        fattn.QuantizedCache.from_blocks(np.zeros((2, 52), np.uint8), "tq4", head_dim=96)
    with pytest.raises(ValueError, match=r"x: every value must be finite with \|x\| <= 1125899906842624 for tq4"):
        reference.quantize_kv(np.full((2, 64), 2.0 ** 51, F32), "tq4")


# --- the decode --------------------------------------------------------------------------------

def model(q, k, v, **kw):
    """The tq4 decode's arithmetic through the public dense API: Q rotated (for a tq4 K), the
    rotated values decoded as float32 caches, each group's output that saw a chunk rotated back
    (for a tq4 V), then the reduce."""
    def kernel_values(c):
        if getattr(c, "format", None) == "tq4":
            return reference.tq4_rotated_values(c.blocks, c.head_dim)
        return c.dequantize() if hasattr(c, "blocks") else c.astype(F32)
    k_tq4, v_tq4 = (getattr(c, "format", None) == "tq4" for c in (k, v))
    qr = reference.tq4_rotate(q) if k_tq4 else q
    o, s, m = fattn.flash_attn_vec_partials(qr, kernel_values(k), kernel_values(v), **kw)
    if v_tq4:
        live = -(-kw["kv_seq_len"] // 32)
        o[..., :live, :] = reference.tq4_unrotate(o[..., :live, :])
    return fattn.flash_attn_vec_reduce(o, s, m), (o, s, m)


CASES = [
    # (D, H, H_kv, capacity, kv_seq_len, options)
    (128, 8, 8, 300, 257, {}),
    (64, 8, 2, 100, 100, {"mask": "causal"}),
    (256, 4, 1, 90, 61, {"mask": "sliding_window", "window": 40}),
    (512, 2, 2, 70, 33, {"softcap": 30.0}),
    (32, 6, 3, 50, 1, {}),
    (128, 4, 2, 96, 80, {"ring_start": 37, "nwg": 4}),
    (256, 4, 4, 130, 129, {"sinks": np.array([0.5, -np.inf, 2.0, -1.0], F32), "nwg": 7}),
]


@pytest.mark.parametrize("isa", ALL_PATHS)
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("kinds", [("tq4", "tq4"), ("tq4", "f16"), ("q8_0", "tq4")])
def test_decode_equals_its_model_on_every_path(rng, restore_isa, isa, case, kinds):
    d, h, hkv, cap, n, opts = CASES[case]
    fattn.set_isa(isa)
    q = rng.standard_normal((2, h, d)).astype(F32)

    def cache(kind):
        x = rng.standard_normal((2, hkv, cap, d)).astype(F32)
        return x.astype(F16) if kind == "f16" else fattn.quantize_kv(x, kind)
    k, v = cache(kinds[0]), cache(kinds[1])
    kw = dict(kv_seq_len=n, **opts)
    out = fattn.flash_attn_vec(q, k, v, **kw)
    want, (o_want, s_want, m_want) = model(q, k, v, **kw)
    assert same_bits(out, want)
    o, s, m = fattn.flash_attn_vec_partials(q, k, v, **kw)
    assert same_bits(o, o_want) and same_bits(s, s_want) and same_bits(m, m_want)
    assert same_bits(fattn.flash_attn_vec_reduce(o, s, m), out)  # partials + reduce = the one call


@pytest.mark.parametrize("case", range(len(CASES)))
def test_decode_within_the_bound_of_exact_attention_over_the_dequantized_cache(rng, case):
    d, h, hkv, cap, n, opts = CASES[case]
    q = (rng.standard_normal((2, h, d)) * 2).astype(F32)
    k = fattn.quantize_kv((rng.standard_normal((2, hkv, cap, d)) * 1.5).astype(F32), "tq4")
    v = fattn.quantize_kv(rng.standard_normal((2, hkv, cap, d)).astype(F32), "tq4")
    kw = dict(kv_seq_len=n, **opts)
    out = fattn.flash_attn_vec(q, k, v, **kw)
    kd, vd = k.dequantize(), v.dequantize()
    if "ring_start" in opts:  # the logical order of the ring
        slots = (opts["ring_start"] + np.arange(n)) % cap
        kd, vd = kd[:, :, slots], vd[:, :, slots]
    group = h // hkv
    kx, vx = np.repeat(kd[:, :, :n], group, 1), np.repeat(vd[:, :, :n], group, 1)
    scale = 1 / np.sqrt(d)
    logits = np.einsum("bhd,bhjd->bhj", q.astype(np.float64), kx.astype(np.float64)) * np.float32(scale)
    if opts.get("softcap"):
        logits = opts["softcap"] * np.tanh(logits / opts["softcap"])
    if opts.get("mask") == "sliding_window":
        logits[..., : n - opts["window"]] = -np.inf
    top = logits.max(-1, keepdims=True)
    if "sinks" in opts:
        top = np.maximum(top, opts["sinks"][None, :, None])
    w = np.exp(logits - top)
    den = w.sum(-1)
    if "sinks" in opts:
        den = den + np.exp(opts["sinks"][None, :] - top[..., 0])
    exact = np.einsum("bhj,bhjd->bhd", w, vx.astype(np.float64)) / den[..., None]
    kb, vb = k, v
    if "ring_start" in opts:  # the bound over the same logical rows
        kb = fattn.QuantizedCache.from_blocks(np.ascontiguousarray(k.blocks[:, :, slots]), "tq4", head_dim=d)
        vb = fattn.QuantizedCache.from_blocks(np.ascontiguousarray(v.blocks[:, :, slots]), "tq4", head_dim=d)
    bound = bounds.decode_bound(q, kb, vb, kv_seq_len=n, window=opts.get("window"),
                                softcap=opts.get("softcap", 0.0), sinks=opts.get("sinks"))
    ok, err, allowed = bounds.within(out, exact, bound)
    assert ok.all(), float((err / allowed).max())


def test_the_numpy_decode_reads_tq4_as_the_kernel_does(rng):
    q = rng.standard_normal((1, 4, 128)).astype(F32)
    k = fattn.quantize_kv(rng.standard_normal((1, 2, 70, 128)).astype(F32), "tq4")
    v = fattn.quantize_kv(rng.standard_normal((1, 2, 70, 128)).astype(F32), "tq4")
    ours = fattn.flash_attn_vec(q, k, v, kv_seq_len=70)
    ref = reference.flash_attn_vec(q, k, v, kv_seq_len=70)
    # The NumPy model rounds its dot products once (the kernel per lane): a few float32 ulps.
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
