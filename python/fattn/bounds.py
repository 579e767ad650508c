"""The error bounds docs/numerics.md derives, evaluated on your data.

Each returns float64 arrays to compare with ``|fattn result - fattn.reference.attention(...)|``
(the exact answer); :func:`within` does the comparison, adding the final store's half ulp. They
are the bounds fattn's own test suite asserts, so a result outside them is a bug to report.

- :func:`ulp`: spacing of float32/float16/bfloat16 numbers at ``|x|``.
- :func:`sdpa_tolerance`: ``fattn.sdpa`` (numerics §3).
- :func:`prefill_bound`: ``fattn.flash_attn_prefill``, both kernels, masks, causal, layouts (§4).
- :func:`decode_bound`: ``fattn.flash_attn_vec`` (§5).
- :func:`merge_bound`: ``fattn.merge_attention`` against ``fattn.reference.merge_attention`` (§6).
- :func:`ring_bound`, :func:`sharded_decode_bound`: ``fattn.integrations.distributed``'s
  ``ring_attention`` and ``decode_sharded`` against the exact attention over the whole sequence
  (§10), on the same schedule the ranks run.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import ml_dtypes
import numpy as np
import numpy.typing as npt

_U32 = 2.0 ** -24  # unit roundoff of float32
_LOG2E = 1.4426950408889634
_TINY32 = 2.0 ** -126  # float32's smallest normal
_BF16 = np.dtype(ml_dtypes.bfloat16)
# Mantissa bits and smallest normal exponent of each type.
_FORMAT = {np.dtype(np.float32): (23, -126), np.dtype(np.float16): (10, -14),
           np.dtype(ml_dtypes.bfloat16): (7, -126)}
_UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0 ** -24, np.dtype(np.float16): 2.0 ** -11,
                  np.dtype(ml_dtypes.bfloat16): 2.0 ** -8}


def _f64(x: Any) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


def _format(dtype: npt.DTypeLike) -> Tuple[int, int]:
    dt = np.dtype(dtype)
    if dt not in _FORMAT:
        raise TypeError(f"dtype: must be one of float32, float16, bfloat16, got {dt}")
    return _FORMAT[dt]


def ulp(x: npt.ArrayLike, dtype: npt.DTypeLike) -> np.ndarray:
    """Spacing of ``dtype``'s numbers at ``|x|`` (the subnormal spacing below the normal range)."""
    mant, min_exp = _format(dtype)
    a = np.abs(np.asarray(x, dtype=np.float64))
    exp = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    spacing: np.ndarray = np.exp2(np.maximum(exp, min_exp) - mant)
    return spacing


def _f32_budget(v: npt.ArrayLike) -> float:
    return 1e-5 * max(1e-30, float(np.max(np.abs(_f64(v)))))


def sdpa_tolerance(dtype: npt.DTypeLike, exact: npt.ArrayLike, v: npt.ArrayLike, *,
                   softcap: float = 0.0) -> np.ndarray:
    """Elementwise allowance on ``|fattn.sdpa(...) - exact|`` for output type ``dtype``:
    ``1e-5·max|v|`` for float32; for bf16/f16 one ulp of the output type at the exact value
    (half for the final rounding, half for f32 arithmetic crossing a rounding boundary) plus
    the same ``1e-5·max|v|``. With ``softcap > 0`` add ``8·u·softcap·max|v|`` (u = 2^-24):
    the capped score is off by at most ``4·u·softcap`` (tanh is 1-Lipschitz; the roundings of
    ``scale/softcap``, the product, fattn's tanh and the final multiply), which moves the
    output by twice that times ``max|v|``. Sinks need no term (their step's few roundings are
    within the allowance). A practical allowance, not a proof (numerics §3)."""
    _format(dtype)
    shape = np.shape(exact)
    budget = _f32_budget(v)
    if softcap > 0:
        budget += 8 * _U32 * float(softcap) * float(np.max(np.abs(_f64(v))))
    if np.dtype(dtype) == np.float32:
        return np.full(shape, budget)
    allowed: np.ndarray = ulp(exact, dtype) + budget
    return allowed


def _expand_kv(x: np.ndarray, heads: int) -> np.ndarray:
    return np.repeat(x, heads // x.shape[1], axis=1)


def prefill_bound(q: npt.ArrayLike, k: npt.ArrayLike, v: npt.ArrayLike, mask: Optional[npt.ArrayLike] = None, *,
                  causal: Union[bool, str] = False, scale: Optional[float] = None, kernel: str = "auto",
                  layout: str = "bhld", softcap: float = 0.0, window: Optional[int] = None,
                  sinks: Optional[npt.ArrayLike] = None, q_offset: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``(bound, e)`` for ``fattn.flash_attn_prefill`` with the same arguments (numerics §4,
    "Error bounds"): ``bound`` broadcasts against the output (per row, before the store's half
    ulp that :func:`within` adds); ``e`` ``[B, H, Lq]`` bounds each row's score error in natural
    units, and so its LSE error.

    Every visible score may be off by ``E`` (the input type's rounding of the pre-scaled Q for
    the candle kernel, the f32 dot chain, the mask's conversion); the normalised weights then
    move by a factor in ``[exp(-2E), exp(2E)]``, the output by ``(exp(2E) - 1)·max|V|``; the
    online recurrence adds ``(2n + 10)·u·max|V|`` for ``n`` visible keys.

    The variants (numerics §4, "Variants"): ``softcap`` passes a score's error through tanh
    (1-Lipschitz) and adds its own: ``u·|s| + 6u·softcap`` (the argument's multiply, the
    tanh's 2 ulp, the two rounded constants, the final multiply); a sink counts as one more
    visible key whose score (``2u·|sink|``: candle's log2(e) multiply) moves the weights, and
    whose fold adds a rounding to the sum and the accumulator; ``window`` and ``q_offset`` only
    choose the visible keys."""
    dtype = np.dtype(np.asarray(q).dtype)
    _format(dtype)
    if layout == "blhd":
        q64, k64, v64 = (_f64(x).transpose(0, 2, 1, 3) for x in (q, k, v))
    else:
        q64, k64, v64 = _f64(q), _f64(k), _f64(v)
    b, h, lq, d = q64.shape
    lk = k64.shape[2]
    k64, v64 = _expand_kv(k64, h), _expand_kv(v64, h)
    s = float(np.float32(1) / np.sqrt(np.float32(d))) if scale is None else float(np.float32(scale))
    absdot = np.einsum("bhid,bhjd->bhij", np.abs(q64), np.abs(k64))
    visible = np.ones((b, h, lq, lk), dtype=bool)
    mask_err: np.ndarray = np.zeros((1, 1, 1, 1))
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask), (b, h, lq, lk))
        if m.dtype == bool:
            visible &= m
        else:
            m64 = m.astype(np.float64)
            visible &= m64 != -np.inf
            finite = np.where(np.isfinite(m64), m64, 0.0)
            if kernel == "llamacpp":  # the mask goes through half
                half = m.astype(np.float32).astype(np.float16).astype(np.float64)
                mask_err = np.abs(np.where(np.isfinite(half), half, 0.0) - finite) + 2 * _U32 * np.abs(finite)
            else:
                mask_err = 2 * _U32 * np.abs(finite)
    if isinstance(causal, str) or causal or window is not None:
        # query i sees keys 0..i + q_offset (True, "top_left") or 0..i + Lk - Lq ("bottom_right")
        offset = lk - lq if causal == "bottom_right" else q_offset
        position = np.arange(lq)[:, None] + offset
        visible &= np.arange(lk)[None, :] <= position
        if window is not None:
            visible &= np.arange(lk)[None, :] > position - window
    if kernel == "llamacpp":
        score_err = (d + 2) * _U32 * s * absdot + mask_err
    else:
        score_err = (2 * _UNIT_ROUNDOFF[dtype] + (d + 2) * _U32) * s * _LOG2E * absdot * np.log(2) + mask_err
    if dtype == _BF16:
        # The bf16 dot product reads denormal factors as zero (a product dropped whole) and
        # flushes each of its D + 1 partial sums below 2^-126 (numerics §4, step 3). Candle's
        # factor is the staged q' = bf16(q·c), c ≈ scale·log2e, denormal a little above
        # |q|·c = 2^-126; both sums are in natural units here.
        c = 1.0 if kernel == "llamacpp" else s * _LOG2E * (1 + 2.0 ** -7)
        q_small = np.where(np.abs(q64) * c < _TINY32 * (1 + 2.0 ** -7), np.abs(q64), 0.0)
        k_small = np.where(np.abs(k64) < _TINY32, np.abs(k64), 0.0)
        dropped = np.einsum("bhid,bhjd->bhij", q_small, np.abs(k64)) + np.einsum("bhid,bhjd->bhij", np.abs(q64), k_small)
        flushed = (d + 1) * _TINY32 * (s if kernel == "llamacpp" else np.log(2))  # log2 units for candle
        score_err = score_err + s * (1 + 2.0 ** -7) * dropped + flushed
    if softcap > 0:
        score_err = score_err + _U32 * s * absdot + 6 * _U32 * softcap
    e = np.where(visible, score_err, 0.0).max(axis=-1)
    n = visible.sum(axis=-1)
    if sinks is not None:
        sink_err = 2 * _U32 * np.abs(np.where(np.isfinite(_f64(sinks)), _f64(sinks), 0.0))
        e = np.maximum(e, sink_err[None, :, None])
        n = n + 1
    vmax = np.abs(v64).max(axis=(2, 3))[..., None]
    a = vmax * (np.expm1(2 * e) + (2 * n + 10) * _U32)
    bound = a[..., None] if layout == "bhld" else a[..., None].transpose(0, 2, 1, 3)
    return bound, e


def decode_bound(q: npt.ArrayLike, k_cache: Any, v_cache: Any, *, kv_seq_len: int,
                 scale: Optional[float] = None, window: Optional[int] = None, softcap: float = 0.0,
                 sinks: Optional[npt.ArrayLike] = None, _terms: Optional[Dict[str, Any]] = None) -> np.ndarray:
    """Per-row bound on ``|fattn.flash_attn_vec(...) - exact|`` (numerics §5, "Error bounds"),
    shaped ``[..., H, 1]`` for q ``[H, D]`` or ``[B, H, D]``: Q's rounding to float16 (relative
    2^-11, absolute 2^-25 below half's normal range), the f32 dot chain, the softcap's tanh;
    then through the softmax as for prefill. With ``sinks``, ``4·u·max|V|`` more for each head
    whose sink is not ``-inf`` (the fold's exp, sum and rescale; the exact answer is
    ``fattn.reference.attention(..., sinks=sinks)``).

    Either cache may be a quantized cache (``fattn.QuantizedCache``): the exact answer is then
    the attention over its dequantized values (``c.dequantize()``). A tq4 cache is read rotated
    (numerics §9): a tq4 K moves the score terms into the rotated domain and adds
    ``2·(log2 D + 2)·u·|q|·|k|`` (Q's rotation, the dequantized K's rotation back); a tq4 V
    adds ``(2n + 10)·u·sqrt(D)·max|V_rot|`` and ``2·(log2 D + 2)·u·max|v_rot|_2`` (the sum in
    the rotated domain, the output's and the dequantized V's rotations back)."""
    from fattn.reference import _cache_values, _is_tq4, _kernel_values, tq4_rotate  # cycle-free

    def values(cache: Any) -> np.ndarray:
        return _cache_values(cache) if hasattr(cache, "blocks") else np.asarray(cache)

    def batched(x: np.ndarray) -> np.ndarray:
        return x[None] if np.asarray(q).ndim == 2 else x

    q64 = batched(_f64(q))
    heads = q64.shape[1]
    k64 = _expand_kv(_f64(batched(values(k_cache)))[:, :, :kv_seq_len], heads)
    v64 = _expand_kv(_f64(batched(values(v_cache)))[:, :, :kv_seq_len], heads)
    d = q64.shape[-1]
    s = float(np.float32(1) / np.sqrt(np.float32(d))) if scale is None else float(np.float32(scale))
    rotation = 2 * (np.log2(d) + 2) * _U32  # one rotation there and one back, each (log2 D + 2)·u·|x|_2
    # The kernel's operands: rotated for a tq4 K (Q turns with it).
    qk = _f64(batched(tq4_rotate(q))) if _is_tq4(k_cache) else q64
    kk = _expand_kv(_f64(batched(_kernel_values(k_cache)))[:, :, :kv_seq_len], heads) if _is_tq4(k_cache) else k64
    q_err = np.maximum(np.abs(qk) * 2.0 ** -11, 2.0 ** -25)
    score_err = s * (np.einsum("bhd,bhjd->bhj", q_err, np.abs(kk))
                     + (d + 2) * _U32 * np.einsum("bhd,bhjd->bhj", np.abs(qk), np.abs(kk)))
    if _is_tq4(k_cache):
        score_err = score_err + s * rotation * np.linalg.norm(q64, axis=-1)[..., None] * np.linalg.norm(k64, axis=-1)
    if softcap > 0:
        score_err = score_err + 4 * _U32 * softcap  # tanh is 1-Lipschitz; its own rounding
    visible = np.ones(kv_seq_len, dtype=bool)
    if window:
        visible &= np.arange(kv_seq_len) >= kv_seq_len - window
    e = np.where(visible, score_err, 0.0).max(axis=-1)
    vmax = np.abs(v64).max(axis=(2, 3))
    sums = (2 * visible.sum() + 10) * _U32
    v_sum_scale = vmax  # what a rounding in the kernel's V sums is relative to, per output element
    bound: np.ndarray = vmax * np.expm1(2 * e)
    if _is_tq4(v_cache):  # a rounding of a rotated coordinate spreads over the row: sqrt(D)·max|V_rot|
        vr = _expand_kv(_f64(batched(_kernel_values(v_cache)))[:, :, :kv_seq_len], heads)
        v_sum_scale = np.sqrt(d) * np.abs(vr).max(axis=(2, 3))
        bound = bound + rotation * np.linalg.norm(vr, axis=-1).max(axis=-1)
    bound = bound + sums * v_sum_scale
    if sinks is not None:
        bound = bound + v_sum_scale * 4 * _U32 * (np.asarray(sinks, dtype=np.float64) != -np.inf)
    if _terms is not None:  # for sharded_decode_bound: the score error, its share of the bound, the keys
        score_part = vmax * np.expm1(2 * e)
        _terms.update(e=e if np.asarray(q).ndim == 3 else e[0], n=int(visible.sum()),
                      score_part=score_part if np.asarray(q).ndim == 3 else score_part[0])
    return bound[..., None] if np.asarray(q).ndim == 3 else bound[0][..., None]


def merge_bound(outputs: Sequence[npt.ArrayLike], lses: Sequence[npt.ArrayLike], *,
                sinks: Optional[npt.ArrayLike] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(out_bound, lse_bound)`` for ``fattn.merge_attention(outputs, lses)`` against the exact
    merge of the parts as given (numerics §6, "Error bounds"): ``(3n + 5)·u·V`` per row, shaped
    ``[..., 1]`` (``V`` = the largest ``|outputs[i]|`` in the row over every part), and
    ``(1.4n + 1)·u + u·|lse|`` shaped ``[...]``, for ``n`` parts and ``u`` = 2^-24. Rows with no
    key anywhere are exact (0 and -inf): their bounds are 0. The parts' own errors add on top.
    With ``sinks`` (any, as passed to the merge) the output bound gains ``(2 + ln n)·u·V``
    (the sink's exp and the denominator's extra add; the LSE's bound is unchanged), against
    ``fattn.reference.merge_attention(..., sinks=sinks)``."""
    from fattn.reference import merge_attention  # the exact LSE; imported here to keep module loading flat

    n = len(outputs)
    _, lse = merge_attention(outputs, lses, return_lse=True)
    empty = np.isneginf(lse)
    vmax = np.stack([np.abs(_f64(o)) for o in outputs]).max(axis=(0, -1))
    factor = 3 * n + 5 + (0 if sinks is None else 2 + np.log(n))
    out_bound: np.ndarray = np.where(empty, 0.0, factor * _U32 * vmax)[..., None]
    lse_bound: np.ndarray = np.where(empty, 0.0, (1.4 * n + 1) * _U32 + _U32 * np.abs(np.where(empty, 0.0, lse)))
    return out_bound, lse_bound


class _Chain:
    """The error of a running merge, per row (numerics §10). Every part's scores come from one
    kernel call and carry that call's score error; the merge of parts computed from perturbed
    scores is, up to rounding, the softmax over all the perturbed scores, so the score errors do
    not add up: ``score`` keeps their maximum (it costs ``(e^{2·score} - 1)·V`` once, at the end).
    The rest is rounding: ``eps`` bounds the output's distance from the attention over the
    perturbed scores merged so far, ``rho`` its LSE's; ``vmax`` bounds the parts' ``|V|``; ``lse``
    is the exact LSE so far. Rows no part has reached are exact (0, -inf)."""

    def __init__(self, shape: Tuple[int, ...]):
        self.eps, self.rho, self.score, self.vmax = (np.zeros(shape) for _ in range(4))
        self.lse = np.full(shape, -np.inf)

    def merge(self, rows: Any, eps: np.ndarray, rho: np.ndarray, score: np.ndarray, vmax: np.ndarray,
              lse: np.ndarray, parts: int = 2) -> None:
        """Merge a part (its rounding bounds ``eps``/``rho``, its score error ``score``) into ``rows``
        with one ``merge_attention`` of ``parts`` inputs: §6's "errors the parts bring" with the
        parts' rounding only, plus the merge's own ``(3n + 5)·u·V`` and ``(1.4n + 1)·u + u·|lse|``.
        The first part a row sees is copied (exact)."""
        e0, r0, v0, l0 = self.eps[rows], self.rho[rows], self.vmax[rows], self.lse[rows]
        fresh = np.isneginf(l0)
        size = np.maximum(v0 + e0, vmax + eps)  # bounds every |output| the merge reads
        rho_in = np.maximum(r0, rho)
        merged_eps = np.maximum(e0, eps) + (np.expm1(2 * rho_in) + (3 * parts + 5) * _U32) * size
        new_lse = np.logaddexp(l0, lse)
        merged_rho = rho_in + (1.4 * parts + 1) * _U32 + _U32 * (np.abs(np.where(np.isneginf(new_lse), 0.0, new_lse))
                                                                 + self.score[rows] + score + rho_in)
        self.eps[rows] = np.where(fresh, eps, merged_eps)
        self.rho[rows] = np.where(fresh, rho, merged_rho)
        self.score[rows] = np.maximum(self.score[rows], score)
        self.vmax[rows] = np.maximum(v0, vmax)
        self.lse[rows] = new_lse

    def sink(self, parts: int = 1) -> None:
        """The final merge with the sinks (``parts`` inputs): the merge's own ``(3n + 5)·u·V`` and
        sink term ``(2 + ln n)·u·V``; the running LSE's rounding moves the sink's share by at most
        ``(e^{2·rho} - 1)·V`` (a perturbed part against an exact sink)."""
        size = self.vmax + self.eps
        self.eps = self.eps + (np.expm1(2 * self.rho) + (3 * parts + 7 + np.log(parts)) * _U32) * size

    def bound(self) -> np.ndarray:
        """The bound against the exact attention: the rounding plus the score error, once."""
        return np.asarray(self.eps + np.expm1(2 * self.score) * self.vmax)


def _prefill_lse_rounding(lse: np.ndarray, keys: int, head_dim: int, kernel: str) -> np.ndarray:
    """§4's LSE bound without the score error: ``(4T + BK/G + 6)·u + u·|lse|``, ``T`` every tile of
    ``keys``."""
    from fattn.reference import prefill_geometry

    _, bk = prefill_geometry(head_dim, kernel=kernel)
    group = 64 if kernel == "llamacpp" else 8
    tiles = -(-keys // bk)
    return (4 * tiles + bk / group + 6) * _U32 + _U32 * np.abs(np.where(np.isneginf(lse), 0.0, lse))


def ring_bound(q: npt.ArrayLike, k: npt.ArrayLike, v: npt.ArrayLike, *, world_size: int,
               causal: bool = False, scale: Optional[float] = None, kernel: str = "auto", softcap: float = 0.0,
               window: Optional[int] = None, sinks: Optional[npt.ArrayLike] = None,
               order: str = "contiguous", lengths: Optional[Sequence[int]] = None) -> np.ndarray:
    """Per-row bound ``[B, H, L, 1]`` on ``|ring_attention - exact|`` for the whole sequences q
    ``[B, H, L, D]``, k, v ``[B, H_kv, L, D]`` split over ``world_size`` equal shards in ``order``
    (``fattn.integrations.distributed.ring_attention``; the exact answer is
    ``fattn.reference.attention(q, k, v, causal="top_left" if causal else None, window=window,
    softcap=softcap, sinks=sinks)``). It follows the schedule the ranks run (``fattn._ring``):
    each part's §4 output bound with its store to the I/O type and §4's LSE bound, carried through
    the running merges as §10 derives; :func:`within` adds the final store's half ulp."""
    from fattn import _ring  # the schedule the distributed call runs
    from fattn.reference import attention

    qa, ka, va = np.asarray(q), np.asarray(k), np.asarray(v)
    b, h, length, d = qa.shape
    if lengths is None:
        if length % world_size:
            raise ValueError(f"q: length {length} is not divisible by world_size {world_size}")
        lengths = [length // world_size] * world_size
    if len(lengths) != world_size or sum(lengths) != length:
        raise ValueError(f"lengths: expected {world_size} shard lengths adding up to {length}, got {list(lengths)}")
    causal_on = bool(causal) or window is not None
    segments = _ring.shard_segments(list(lengths), order)
    result = np.zeros((b, h, length, 1))
    for rank in range(world_size):
        chains = [_Chain((b, h, s.length)) for s in segments[rank]]
        for part in _ring.parts(rank, segments, causal_on, window):
            qs = segments[rank][part.q_seg]
            qp = qa[:, :, qs.start + part.row_begin:qs.start + part.row_end]
            # the part's keys: the block's segments in its local order, then the part's range
            kp, vp = (np.concatenate([x[:, :, k.start:k.start + k.length] for k in segments[part.block]],
                                     axis=2)[:, :, part.key_begin:part.key_end] for x in (ka, va))
            kw: Dict[str, Any] = dict(scale=scale, softcap=softcap, window=window)
            if part.causal:
                kw["q_offset"] = part.q_offset
            bound, e = prefill_bound(qp, kp, vp, causal=part.causal, kernel=kernel, **kw)
            exact, lse = attention(qp, kp, vp, causal="top_left" if part.causal else None, return_lse=True, **kw)
            vmax = np.broadcast_to(np.abs(_expand_kv(_f64(vp), h)).max(axis=(2, 3))[..., None], e.shape)
            rounding = bound[..., 0] - np.expm1(2 * e) * vmax  # §4's bound without its score term
            eps = rounding + 0.5 * ulp(np.abs(exact) + bound, qa.dtype).max(axis=-1)  # and the part's store
            chains[part.q_seg].merge((slice(None), slice(None), slice(part.row_begin, part.row_end)),
                                     eps, _prefill_lse_rounding(lse, part.key_end - part.key_begin, d, kernel), e,
                                     vmax, lse)
        for s, chain in zip(segments[rank], chains):
            if sinks is not None:
                chain.sink()
            result[:, :, s.start:s.start + s.length, 0] = chain.bound()
    return result


def _positions(cache: Any, first: int, end: int) -> Any:
    """Positions ``first .. end - 1`` of a dense cache or a quantized one (its blocks' rows)."""
    if hasattr(cache, "blocks"):
        return type(cache).from_blocks(cache.blocks[..., first:end, :], cache.format, head_dim=cache.head_dim)
    return np.asarray(cache)[..., first:end, :]


def _values(cache: Any) -> np.ndarray:
    """What a cache holds as values: a quantized cache's dequantized float32 values."""
    return np.asarray(cache.dequantize()) if hasattr(cache, "blocks") else np.asarray(cache)


def sharded_decode_bound(q: npt.ArrayLike, k_shards: Sequence[Any], v_shards: Sequence[Any],
                         kv_seq_lens: Sequence[int], *, scale: Optional[float] = None, window: Optional[int] = None,
                         softcap: float = 0.0, sinks: Optional[npt.ArrayLike] = None) -> np.ndarray:
    """Per-row bound (shaped as :func:`decode_bound`'s) on ``|decode_sharded - exact|`` for
    shards ``k_shards[r]``/``v_shards[r]`` (dense, or quantized caches: their dequantized values) with ``kv_seq_lens[r]`` valid positions each
    (``fattn.integrations.distributed.decode_sharded``; the exact answer is the attention over the
    shards' valid positions concatenated in rank order, the last ``window`` of them with a window,
    with the sinks): each shard's §5 bound and LSE bound ``E + (2n + 10)·u + u·|lse|``, then one
    merge of ``W`` parts (§6's bound with the parts' errors, §10)."""
    from fattn.reference import attention

    qa = _f64(q)
    batched = qa.ndim == 3
    q4 = (qa if batched else qa[None])[:, :, None]  # [B, H, 1, D]
    world = len(k_shards)
    total = sum(int(n) for n in kv_seq_lens)
    heads = qa.shape[-2]
    chain = _Chain(qa.shape[:-1])
    parts, start = 0, 0
    for r in range(world):
        n = int(kv_seq_lens[r])
        first = max(0, total - window - start) if window else 0
        start += n
        if first >= n:
            continue
        kr, vr = (_positions(x, first, n) for x in (k_shards[r], v_shards[r]))
        terms: Dict[str, Any] = {}
        bound = decode_bound(q, kr, vr, kv_seq_len=n - first, scale=scale, softcap=softcap, _terms=terms)[..., 0]
        k4, v4 = (_f64(x if batched else x[None]) for x in (_values(kr), _values(vr)))
        _, lse = attention(q4, k4, v4, scale=scale, softcap=softcap, return_lse=True)
        lse = lse[..., 0] if batched else lse[0, ..., 0]
        rho = (2 * terms["n"] + 10) * _U32 + _U32 * np.abs(lse)  # the LSE's sums and its f32 store
        vmax = np.abs(_expand_kv(v4, heads)).max(axis=(2, 3))
        chain.merge(..., bound - terms["score_part"], rho, terms["e"], vmax if batched else vmax[0], lse,
                    parts=world)
        parts += 1
    if parts == 0:  # no visible key anywhere: 0, exactly
        return np.zeros(qa.shape[:-1] + (1,))
    if sinks is not None:  # the same single merge's sink term, and the LSE rounding against the sink
        chain.eps = chain.eps + (np.expm1(2 * chain.rho) + (2 + np.log(world)) * _U32) * (chain.vmax + chain.eps)
    return chain.bound()[..., None]


def within(out: npt.ArrayLike, exact: npt.ArrayLike, bound: npt.ArrayLike
           ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ok, err, allowed)`` elementwise: ``|out - exact| <= bound`` plus half an ulp of out's
    type at ``|exact| + bound`` (the final store's rounding)."""
    o = np.asarray(out)
    ex = _f64(exact)
    b = _f64(bound)
    err = np.abs(_f64(o) - ex)
    allowed = b + 0.5 * ulp(np.abs(ex) + b, o.dtype)
    ok: np.ndarray = err <= allowed
    return ok, err, allowed
