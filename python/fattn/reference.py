"""NumPy references, written to be read before they are fast.

* :func:`attention` is the exact algorithm in float64: what attention *is*.
* One function per kernel follows that kernel's own arithmetic (its
  roundings, exp or exp2, sentinels, order of rescaling) in float32, so a
  difference between fattn and :func:`attention` can be split into the
  algorithm's share (kernel reference vs exact) and the implementation's
  share (fattn vs kernel reference). See docs/numerics.md.

All functions take the same array types as the kernels (float32, float16,
``ml_dtypes.bfloat16``; anything NumPy can widen to float64 is accepted by
:func:`attention`).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

__all__ = ["attention", "sdpa"]

_CAUSAL = (None, "top_left", "bottom_right")


def _expand_kv(x: np.ndarray, heads: int) -> np.ndarray:
    """[B, H_kv, L, D] -> [B, H, L, D]: query head h reads K/V head h // (H // H_kv)."""
    kv_heads = x.shape[1]
    if heads % kv_heads:
        raise ValueError(f"q/k: the number of query heads H ({heads}) must be divisible by "
                         f"the number of K/V heads H_kv ({kv_heads})")
    return np.repeat(x, heads // kv_heads, axis=1)


def attention(q, k, v, mask=None, *, causal: Optional[str] = None, scale: Optional[float] = None,
              layout: str = "bhld", softcap: float = 0.0, window: Optional[int] = None,
              return_lse: bool = False) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Exact softmax attention in float64.

    Shapes (``layout="bhld"``): q ``[B, H, Lq, D]``, k and v ``[B, H_kv, Lk, D]``
    with ``H % H_kv == 0``; ``layout="blhd"`` takes ``[B, L, H, D]`` for all three
    and returns the output in that layout.

    ``score[i, j] = scale * q_i . k_j`` (``scale`` defaults to ``1/sqrt(D)``),
    then ``softcap * tanh(score / softcap)`` when ``softcap > 0``, then the
    mask: a bool mask keeps True, an additive mask is added (``-inf`` blocks).
    The mask broadcasts like NumPy against ``[B, H, Lq, Lk]``.

    Positions: query ``i`` sits at ``i`` (``causal="top_left"``) or at
    ``i + Lk - Lq`` (``"bottom_right"``, and also when ``causal`` is None).
    ``causal`` blocks keys after the query's position; ``window=W`` blocks
    keys at or before ``position - W`` (so the query sees at most ``W`` keys
    ending at its own position).

    A row with no visible key gives 0 (and LSE ``-inf``). Returns float64
    ``[B, H, Lq, D]`` (in q's layout), and with ``return_lse=True`` also the
    natural-log log-sum-exp of the final scores per row, ``[B, H, Lq]``.
    """
    if causal not in _CAUSAL:
        raise ValueError(f"causal: must be one of {_CAUSAL}, got {causal!r}")
    if layout not in ("bhld", "blhd"):
        raise ValueError(f"layout: must be 'bhld' or 'blhd', got {layout!r}")
    q, k, v = (np.asarray(x).astype(np.float64) for x in (q, k, v))
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"{name}: expected a 4-D array, got shape {x.shape}")
    if layout == "blhd":
        q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    batch, heads, q_len, head_dim = q.shape
    k_len = k.shape[2]
    k, v = _expand_kv(k, heads), _expand_kv(v, heads)
    if scale is None:
        scale = 1.0 / np.sqrt(head_dim)

    scores = np.einsum("bhid,bhjd->bhij", q, k) * scale
    if softcap and softcap > 0:
        scores = softcap * np.tanh(scores / softcap)

    visible = np.ones((1, 1, q_len, k_len), dtype=bool)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == bool:
            visible = visible & mask
        else:
            bias = mask.astype(np.float64)
            scores = scores + bias
            visible = visible & (bias != -np.inf)
    offset = 0 if causal == "top_left" else k_len - q_len
    position = np.arange(q_len)[:, None] + offset
    key = np.arange(k_len)[None, :]
    if causal is not None:
        visible = visible & (key <= position)
    if window is not None:
        visible = visible & (key > position - int(window))
    visible = np.broadcast_to(visible, (batch, heads, q_len, k_len))

    scores = np.where(visible, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    safe_max = np.where(np.isfinite(row_max), row_max, 0.0)
    weights = np.where(visible, np.exp(scores - safe_max), 0.0)
    row_sum = weights.sum(axis=-1, keepdims=True)
    out = np.einsum("bhij,bhjd->bhid", weights, v)
    out = np.divide(out, row_sum, out=np.zeros_like(out), where=row_sum > 0)
    if layout == "blhd":
        out = out.transpose(0, 2, 1, 3)
    if not return_lse:
        return out
    with np.errstate(divide="ignore"):
        lse = np.where(row_sum[..., 0] > 0, safe_max[..., 0] + np.log(row_sum[..., 0]), -np.inf)
    return out, lse


def sdpa(q, k, v, *, causal: bool = True, scale: Optional[float] = None,
         kv_seq_len: Optional[int] = None) -> np.ndarray:
    """mlx-native's naive SDPA kernel, step by step in float32 (same signature as ``fattn.sdpa``).

    1. scores: each dot product ``q_i . k_j`` correctly rounded to float32
       (the kernel sums in float32 in its own order; the difference is a few
       float32 ulps of ``sum |q_d k_d|``), times ``scale`` in float32;
    2. per row, keys in order: ``m' = max(m, s)`` from ``m = -inf``,
       ``c = exp(m - m')``, ``w = exp(s - m')``, ``l = l*c + w``,
       ``acc = acc*c + w*v_j`` (each operation rounded to float32);
    3. ``out = acc * (1/l)`` (0 for a row that sees no key), rounded once to
       q's dtype.
    Causal is bottom-right aligned (query ``i`` at ``kv_seq_len - Lq + i``).
    """
    dtype = np.asarray(q).dtype
    q32, k32, v32 = (np.asarray(x).astype(np.float32) for x in (q, k, v))
    batch, heads, q_len, head_dim = q32.shape
    kv_len = k32.shape[2] if kv_seq_len is None else int(kv_seq_len)
    k32 = _expand_kv(k32[:, :, :kv_len], heads)
    v32 = _expand_kv(v32[:, :, :kv_len], heads)
    f32 = np.float32
    scale32 = f32(1.0) / np.sqrt(f32(head_dim)) if scale is None else f32(scale)

    dots = np.einsum("bhid,bhjd->bhij", q32.astype(np.float64), k32.astype(np.float64)).astype(f32)
    scores = dots * scale32
    if causal:
        visible = np.clip(kv_len - q_len + np.arange(q_len) + 1, 0, kv_len)
    else:
        visible = np.full(q_len, kv_len)

    running_max = np.full((batch, heads, q_len), -np.inf, dtype=f32)
    running_sum = np.zeros((batch, heads, q_len), dtype=f32)
    acc = np.zeros((batch, heads, q_len, head_dim), dtype=f32)
    with np.errstate(invalid="ignore", over="ignore"):
        for j in range(kv_len):
            active = (j < visible)[None, None, :]
            s = scores[..., j]
            new_max = np.where(active, np.maximum(running_max, s), running_max)
            correction = np.where(active, np.exp(running_max - new_max), f32(1.0))
            weight = np.where(active, np.exp(s - new_max), f32(0.0))
            running_sum = np.where(active, running_sum * correction + weight, running_sum)
            update = acc * correction[..., None] + weight[..., None] * v32[:, :, j][:, :, None, :]
            acc = np.where(active[..., None], update, acc)
            running_max = new_max
    inv_sum = np.where(running_sum > 0, f32(1.0) / np.where(running_sum > 0, running_sum, f32(1.0)), f32(0.0))
    out = acc * inv_sum[..., None].astype(f32)
    return out.astype(dtype)
