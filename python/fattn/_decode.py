from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from ._common import (FLOAT32, as_array, head_dim_contiguous, integer, optional_scale, require_dtype,
                      require_same_dtype)

_MASKS = {"none": 0, "causal": 1, "sliding_window": 2}


def _decode_args(q, k_cache, v_cache, kv_seq_len, scale, mask, window, softcap, nwg):
    q, k, v = as_array(q, "q"), as_array(k_cache, "k_cache"), as_array(v_cache, "v_cache")
    if q.ndim not in (2, 3):
        raise ValueError(f"q: expected [H, D] or [B, H, D], got shape {q.shape}")
    for name, a in (("k_cache", k), ("v_cache", v)):
        if a.ndim != q.ndim + 1:
            want = "[H_kv, capacity, D]" if q.ndim == 2 else "[B, H_kv, capacity, D]"
            raise ValueError(f"{name}: expected {want} to go with q of shape {q.shape}, got shape {a.shape}")
    if q.dtype != FLOAT32:
        raise TypeError(f"q: dtype must be float32 (the seed stages it to float16 itself), got {q.dtype}")
    require_dtype(k, "k_cache")
    require_same_dtype(v, "v_cache", k, "k_cache")
    if mask not in _MASKS:
        raise ValueError(f"mask: must be one of {tuple(_MASKS)}, got {mask!r}")
    kv_len = integer(kv_seq_len, "kv_seq_len")
    if kv_len < 1:
        raise ValueError(f"kv_seq_len: must be >= 1, got {kv_len}")
    window = integer(window, "window")
    if isinstance(softcap, (bool, np.bool_)) or not isinstance(softcap, (int, float, np.integer, np.floating)):
        raise TypeError(f"softcap: expected a real number, got {type(softcap).__name__}")
    softcap = float(softcap)
    if not np.isfinite(softcap) or softcap < 0:
        raise ValueError(f"softcap: must be finite and >= 0 (0 = off), got {softcap}")
    nwg = integer(nwg, "nwg")
    if q.ndim == 2:
        q4, k4, v4 = q[None, :, None, :], k[None], v[None]
    else:
        q4, k4, v4 = q[:, :, None, :], k, v
    params = (kv_len, optional_scale(scale), _MASKS[mask], window, softcap, nwg)
    return q, head_dim_contiguous(q4), head_dim_contiguous(k4), head_dim_contiguous(v4), params


def flash_attn_vec(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, *, kv_seq_len: int,
                   scale: Optional[float] = None, mask: str = "none", window: int = 0, softcap: float = 0.0,
                   nwg: int = 32) -> np.ndarray:
    """Vec decode (mlx-native's ``flash_attn_vec``, seed 002): one query per head against a KV cache.

    Shapes: q float32 ``[H, D]`` or ``[B, H, D]``; ``k_cache``, ``v_cache`` ``[H_kv, capacity, D]``
    or ``[B, H_kv, capacity, D]`` in float32, float16 (the seed's two paths) or bfloat16, with
    ``H % H_kv == 0``; only positions ``< kv_seq_len`` are read (the rest of the capacity may hold
    anything, NaN included). D: any multiple of 32 up to 512 (the seed: 256 and 512). Output:
    float32 shaped like q.

    mask: ``"none"``; ``"causal"`` (the query sits at position ``kv_seq_len - 1``, so nothing more
    is masked); ``"sliding_window"`` (only the last ``window`` positions, ``window = 0`` = all).
    softcap > 0 applies ``softcap * tanh(score / softcap)`` (not in the seed's kernel; llama.cpp's
    convention). nwg: groups (1 to 64) that take chunks of 32 positions round-robin.

    Numerics (docs/numerics.md, "Vec decode"): Q rounded to float16, f32 dot products, the masked
    score -65504, natural exp from a finite starting max, one rescale per chunk, then the reduce
    ``sum_g exp(M_g - M) O_g * (1 / sum_g exp(M_g - M) S_g)``. Equals
    ``flash_attn_vec_reduce(*flash_attn_vec_partials(...))`` bit for bit.
    """
    q, q4, k4, v4, params = _decode_args(q, k_cache, v_cache, kv_seq_len, scale, mask, window, softcap, nwg)
    out = np.empty(q.shape, dtype=np.float32)
    out4 = out[None, :, None, :] if q.ndim == 2 else out[:, :, None, :]
    _core.flash_attn_vec(q4, k4, v4, out4, *params)
    return out


def flash_attn_vec_partials(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, *, kv_seq_len: int,
                            scale: Optional[float] = None, mask: str = "none", window: int = 0,
                            softcap: float = 0.0, nwg: int = 32) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first half of :func:`flash_attn_vec`: per head and group, the unnormalised output and its
    softmax state. Returns ``(o, s, m)``: o float32 ``[..., H, nwg, D]``, s (sum of weights) and m
    (running max, natural-log units; ``-FLT_MAX/2`` for a group that saw no position) float32
    ``[..., H, nwg]``. Same arguments as :func:`flash_attn_vec`."""
    q, q4, k4, v4, params = _decode_args(q, k_cache, v_cache, kv_seq_len, scale, mask, window, softcap, nwg)
    lead, g = q.shape[:-1], params[-1]
    o = np.empty(lead + (g, q.shape[-1]), dtype=np.float32)
    s = np.empty(lead + (g,), dtype=np.float32)
    m = np.empty(lead + (g,), dtype=np.float32)
    as4 = (lambda x: x[None]) if q.ndim == 2 else (lambda x: x)
    _core.flash_attn_vec_partials(q4, k4, v4, as4(o), as4(s)[..., None], as4(m)[..., None], *params)
    return o, s, m


def flash_attn_vec_reduce(o: np.ndarray, s: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The second half of :func:`flash_attn_vec`: combines the per-group partials
    ``o [..., H, nwg, D]``, ``s`` and ``m`` ``[..., H, nwg]`` (float32) into the float32 output
    ``[..., H, D]``: ``M = max_g m_g``, ``w_g = exp(m_g - M)``, ``out = (sum_g w_g o_g) / (sum_g
    w_g s_g)``, 0 where the denominator is 0 (sums as balanced trees, a reciprocal multiply)."""
    o, s, m = as_array(o, "o"), as_array(s, "s"), as_array(m, "m")
    for name, a in (("o", o), ("s", s), ("m", m)):
        if a.dtype != FLOAT32:
            raise TypeError(f"{name}: dtype must be float32, got {a.dtype}")
    if o.ndim not in (3, 4):
        raise ValueError(f"o: expected [H, nwg, D] or [B, H, nwg, D], got shape {o.shape}")
    for name, a in (("s", s), ("m", m)):
        if a.shape != o.shape[:-1]:
            raise ValueError(f"{name}: shape must be o's without D, {o.shape[:-1]}, got {a.shape}")
    as4 = (lambda x: x[None]) if o.ndim == 3 else (lambda x: x)
    out = np.empty(o.shape[:-2] + (o.shape[-1],), dtype=np.float32)
    _core.flash_attn_vec_reduce(head_dim_contiguous(as4(o)), as4(s)[..., None], as4(m)[..., None],
                                as4(out)[..., None, :])
    return out


def merge_attention(outputs: Sequence[np.ndarray], lses: Sequence[np.ndarray], *, return_lse: bool = False
                    ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Attention over the union of disjoint key sets, from the results over each set.

    ``outputs[i]`` (normalised attention outputs, ``[..., D]``, float32/float16/bfloat16) and
    ``lses[i]`` (their natural-log log-sum-exp, ``[...]``, ``-inf`` for a set with no key), e.g.
    from ``flash_attn_prefill(..., return_lse=True)`` over chunks of the keys. The same algebra as
    the vec reduce: ``M = max_i lse_i``, ``w_i = exp(lse_i - M)``, ``out = (sum_i w_i out_i) *
    (1 / sum_i w_i)``, ``lse = M + log(sum_i w_i)``; computed in float32, returned as float32 (and
    the LSE with ``return_lse=True``). A row with no key anywhere gives 0 and LSE -inf.
    """
    if isinstance(outputs, np.ndarray) or isinstance(lses, np.ndarray):
        raise TypeError("outputs, lses: expected sequences (lists or tuples) of arrays, one per key set")
    outputs, lses = list(outputs), list(lses)
    if not outputs:
        raise ValueError("outputs: need at least one attention result")
    if len(lses) != len(outputs):
        raise ValueError(f"lses: need one per output ({len(outputs)}), got {len(lses)}")
    shape = as_array(outputs[0], "outputs[0]").shape
    if len(shape) < 1:
        raise ValueError("outputs[0]: expected [..., D]")
    flat_o, flat_l = [], []
    for i, (o, l) in enumerate(zip(outputs, lses)):
        o, l = as_array(o, f"outputs[{i}]"), as_array(l, f"lses[{i}]")
        require_dtype(o, f"outputs[{i}]")
        require_dtype(l, f"lses[{i}]")
        if o.shape != shape:
            raise ValueError(f"outputs[{i}]: shape must be {shape} (outputs[0]'s), got {o.shape}")
        if l.shape != shape[:-1]:
            raise ValueError(f"lses[{i}]: shape must be {shape[:-1]} (the outputs' without D), got {l.shape}")
        flat_o.append(np.ascontiguousarray(o, dtype=np.float32).reshape(-1, shape[-1]))
        flat_l.append(np.ascontiguousarray(l, dtype=np.float32).reshape(-1))
    rows = flat_l[0].shape[0]
    if rows == 0 or shape[-1] == 0:
        raise ValueError(f"outputs: every extent must be > 0, got shape {shape}")
    out = np.empty((rows, shape[-1]), dtype=np.float32)
    lse = np.empty(rows, dtype=np.float32)
    _core.merge_attention(flat_o, flat_l, out, lse)
    out, lse = out.reshape(shape), lse.reshape(shape[:-1])
    return (out, lse) if return_lse else out
