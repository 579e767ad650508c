"""Error bounds of docs/numerics.md, evaluated on actual data, for the examples.

Not an example itself (`make examples` skips files starting with "_"). Every
function returns float64 arrays you compare against |fattn - exact|.
"""
import ml_dtypes
import numpy as np

U = 2.0 ** -24  # unit roundoff of float32
LOG2E = 1.4426950408889634


def ulp(x, dtype):
    """Spacing of `dtype`'s numbers at |x| (subnormal spacing below the normal range)."""
    info = ml_dtypes.finfo(dtype)
    mag = np.maximum(np.abs(np.asarray(x, dtype=np.float64)), float(info.smallest_normal))
    return np.exp2(np.floor(np.log2(mag)) - info.nmant)


def ulp_error(out, ref):
    """|out - ref| in ulps of out's type at the reference value (0 = same value)."""
    err = np.abs(np.asarray(out, dtype=np.float64) - np.asarray(ref, dtype=np.float64))
    return err / ulp(ref, np.asarray(out).dtype)


def v_scale(v, heads):
    """max|v| per (batch, query head): each output row is a convex combination of its V rows."""
    vmax = np.abs(np.asarray(v, dtype=np.float64)).max(axis=(2, 3))  # [B, H_kv]
    return np.repeat(vmax, heads // vmax.shape[1], axis=1)[..., None, None]


def sdpa_tolerance(out_dtype, exact, v):
    """The practical allowance the tests assert for fattn.sdpa (numerics.md section 3):
    1e-5*max|v| for float32, plus one ulp of the output type at the exact value for bf16/f16."""
    budget = 1e-5 * v_scale(v, exact.shape[1])
    if np.dtype(out_dtype) == np.float32:
        return np.broadcast_to(budget, exact.shape)
    return ulp(exact, out_dtype) + budget


def prefill_bound(q, k, v, mask=None, *, causal=False):
    """Bound on |flash_attn_prefill - exact| for the candle kernel, [B, H, Lq, D] arrays
    (numerics.md section 4): every visible score may be off by
        E = (2 u_T + (D + 2) u) * scale * sum_d |q_d k_d|        (natural units)
    which moves the softmax weights by a factor in [exp(-2E), exp(2E)]; the online
    recurrence adds (2n + 10) u max|v|; the store half an ulp of the output type."""
    u_t = 2.0 ** -(ml_dtypes.finfo(q.dtype).nmant + 1)
    q64, k64 = (np.asarray(x, dtype=np.float64) for x in (q, k))
    h, d = q64.shape[1], q64.shape[3]
    k64 = np.repeat(k64, h // k64.shape[1], axis=1)
    scale = float(np.float32(1) / np.sqrt(np.float32(d)))
    score_err = (2 * u_t + (d + 2) * U) * scale * np.einsum("bhid,bhjd->bhij", np.abs(q64), np.abs(k64))
    visible = np.ones(score_err.shape, dtype=bool)
    if mask is not None:
        visible &= np.asarray(mask, dtype=bool)
    if causal:  # prefill's causal is top-left: query i sees keys 0..i
        visible &= np.tri(*score_err.shape[-2:], dtype=bool)
    e = np.where(visible, score_err, 0.0).max(axis=-1)[..., None]
    n = visible.sum(axis=-1)[..., None]
    return v_scale(v, h) * (np.expm1(2 * e) + (2 * n + 10) * U)  # + the store: see within()


def decode_bound(q, k_cache, v_cache, kv_seq_len, *, window=0):
    """Bound on |flash_attn_vec - exact| per output row for q [H, D], caches [H_kv, capacity, D]
    (numerics.md section 5): Q is rounded to float16 (relative 2^-11, absolute 2^-25 in half's
    subnormal range), then an f32 dot chain; through the softmax as for prefill."""
    q64 = np.asarray(q, dtype=np.float64)
    h, d = q64.shape
    k64 = np.asarray(k_cache[:, :kv_seq_len], dtype=np.float64)
    k64 = np.abs(np.repeat(k64, h // k64.shape[0], axis=0))
    scale = float(np.float32(1) / np.sqrt(np.float32(d)))
    q_err = np.maximum(2.0 ** -11 * np.abs(q64), 2.0 ** -25) + (d + 2) * U * np.abs(q64)
    score_err = scale * np.einsum("hd,hjd->hj", q_err, k64)
    start = max(0, kv_seq_len - window) if window else 0
    e = score_err[:, start:].max(axis=-1, keepdims=True)
    n = kv_seq_len - start
    vmax = np.abs(np.asarray(v_cache[:, :kv_seq_len], dtype=np.float64)).max(axis=(1, 2))
    vmax = np.repeat(vmax, h // vmax.shape[0])[:, None]
    return vmax * (np.expm1(2 * e) + (2 * n + 10) * U)


def within(out, exact, bound):
    """(ok, err, allowed): |out - exact| <= bound + half an ulp of out's type (the store)."""
    err = np.abs(np.asarray(out, dtype=np.float64) - exact)
    allowed = bound + 0.5 * ulp(np.abs(exact) + bound, out.dtype)
    return bool(np.all(err <= allowed)), err, allowed
