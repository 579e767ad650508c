"""Tolerances and comparisons the tests share; docs/numerics.md derives them."""
import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
DTYPES = [F32, F16, BF16]

# Mantissa bits and smallest normal exponent of each type.
_FORMAT = {F32: (23, -126), F16: (10, -14), BF16: (7, -126)}


def ulp(x, dtype):
    """Spacing of `dtype`'s numbers at |x| (float64 array)."""
    mant, min_exp = _FORMAT[np.dtype(dtype)]
    x = np.abs(np.asarray(x, dtype=np.float64))
    exp = np.floor(np.log2(np.where(x > 0, x, 1.0)))
    return np.exp2(np.maximum(exp, min_exp) - mant)


def f32_budget(v):
    """The f32 error allowance of an attention output: 1e-5 of max|V| (each
    output is a convex combination of V rows, so max|V| is its scale)."""
    return 1e-5 * max(1e-30, float(np.max(np.abs(np.asarray(v, dtype=np.float64)))))


def exact_tolerance(dtype, exact, v):
    """|fattn - exact| allowed elementwise: f32 -> the f32 budget; bf16/f16 ->
    one ulp of the output type at the exact value (half from the final
    rounding, the rest from f32 arithmetic that can cross a rounding
    boundary) plus the f32 budget."""
    dtype = np.dtype(dtype)
    if dtype == F32:
        return np.full(np.shape(exact), f32_budget(v))
    return ulp(exact, dtype) + f32_budget(v)


def random_inputs(rng, dtype, *shapes, scale=1.0):
    return [(rng.standard_normal(s) * scale).astype(dtype) for s in shapes]


def as64(x):
    return np.asarray(x).astype(np.float64)

U32 = 2.0 ** -24
UNIT_ROUNDOFF = {F32: 2.0 ** -24, F16: 2.0 ** -11, BF16: 2.0 ** -8}
LOG2E = 1.4426950408889634


def expand_kv(x, heads):
    return np.repeat(x, heads // x.shape[1], axis=1)


def prefill_exact_bound(q, k, v, mask=None, *, causal=False, scale=None, kernel="auto", layout="bhld"):
    """Elementwise bound on |flash_attn_prefill - reference.attention| (docs/numerics.md,
    "Tiled prefill: error bounds"), evaluated on the actual data; also the per-row bound
    E on the score error, which bounds the LSE error.

    Scores move by at most E per row (in natural units) ->
    normalised weights move by a factor in [exp(-2E), exp(2E)] -> the output by
    (exp(2E) - 1) * V; the online recurrence adds (2n + 10) u * V (n visible keys);
    the store adds half an ulp of the output type."""
    dtype = np.dtype(np.asarray(q).dtype)
    t = (lambda x: np.asarray(x).astype(np.float64).transpose(0, 2, 1, 3)) if layout == "blhd" else as64
    q64, k64, v64 = t(q), t(k), t(v)
    b, h, lq, d = q64.shape
    lk = k64.shape[2]
    k64, v64 = expand_kv(k64, h), expand_kv(v64, h)
    s = float(np.float32(1) / np.sqrt(np.float32(d))) if scale is None else float(np.float32(scale))
    absdot = np.einsum("bhid,bhjd->bhij", np.abs(q64), np.abs(k64))
    visible = np.ones((b, h, lq, lk), dtype=bool)
    mask_err = np.zeros((1, 1, 1, 1))
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask), (b, h, lq, lk))
        if m.dtype == bool:
            visible &= m
        else:
            m64 = m.astype(np.float64)
            visible &= m64 != -np.inf
            finite = np.where(np.isfinite(m64), m64, 0.0)
            if kernel == "llamacpp":
                half = np.asarray(m.astype(np.float32).astype(np.float16), dtype=np.float64)
                mask_err = np.abs(np.where(np.isfinite(half), half, 0.0) - finite) + 2 * U32 * np.abs(finite)
            else:
                mask_err = 2 * U32 * np.abs(finite)
    if causal:
        visible &= np.arange(lk)[None, :] <= np.arange(lq)[:, None]
    if kernel == "llamacpp":
        score_err = (d + 2) * U32 * s * absdot + mask_err
    else:
        ut = UNIT_ROUNDOFF[dtype]
        score_err = (2 * ut + (d + 2) * U32) * s * LOG2E * absdot * np.log(2) + mask_err
    e = np.where(visible, score_err, 0.0).max(axis=-1)
    n = visible.sum(axis=-1)
    vmax = np.abs(v64).max(axis=(2, 3))[..., None]
    a = vmax * (np.expm1(2 * e) + (2 * n + 10) * U32)
    bound = a[..., None] if layout == "bhld" else a[..., None].transpose(0, 2, 1, 3)
    return bound, e


def within_exact_bound(out, exact, bound):
    """|out - exact| <= bound + half an ulp of out's type at |exact| + bound."""
    dtype = np.dtype(out.dtype)
    err = np.abs(as64(out) - exact)
    allowed = bound + 0.5 * ulp(np.abs(exact) + bound, dtype)
    return err <= allowed, err, allowed


def decode_exact_bound(q, k, v, *, kv_seq_len, scale=None, window=None, softcap=0.0):
    """Bound on |flash_attn_vec - reference.attention| per output row (docs/numerics.md, "Vec
    decode: error bounds"): Q's rounding to float16 (relative 2^-11, or absolute 2^-25 below the
    half normal range, inf above it), the f32 dot chain, the softcap's tanh; then through the
    softmax as for prefill."""
    q64 = as64(q)
    if q64.ndim == 2:
        q64, k, v = q64[None], np.asarray(k)[None], np.asarray(v)[None]
    k64 = expand_kv(as64(k)[:, :, :kv_seq_len], q64.shape[1])
    v64 = expand_kv(as64(v)[:, :, :kv_seq_len], q64.shape[1])
    d = q64.shape[-1]
    s = float(np.float32(1) / np.sqrt(np.float32(d))) if scale is None else float(np.float32(scale))
    q_err = np.maximum(np.abs(q64) * 2.0 ** -11, 2.0 ** -25)  # per element of Q
    score_err = s * (np.einsum("bhd,bhjd->bhj", q_err, np.abs(k64))
                     + (d + 2) * U32 * np.einsum("bhd,bhjd->bhj", np.abs(q64), np.abs(k64)))
    if softcap > 0:
        score_err = score_err + 4 * U32 * softcap  # tanh is 1-Lipschitz; its own rounding
    visible = np.ones(kv_seq_len, dtype=bool)
    if window:
        visible &= np.arange(kv_seq_len) >= kv_seq_len - window
    e = np.where(visible, score_err, 0.0).max(axis=-1)
    vmax = np.abs(v64).max(axis=(2, 3))
    bound = vmax * (np.expm1(2 * e) + (2 * visible.sum() + 10) * U32)
    return bound[..., None] if np.asarray(q).ndim == 3 else bound[0][..., None]
