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

from types import SimpleNamespace
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__all__ = ["attention", "sdpa", "flash_attn_prefill", "prefill_geometry", "flash_attn_vec", "flash_attn_vec_partials",
           "flash_attn_vec_reduce", "merge_attention", "quantize_kv", "dequantize_kv", "quant_row_bytes",
           "tq4_rotate", "tq4_unrotate", "tq4_rotated_values", "flash_attn_varlen", "gather_paged"]

_CAUSAL = (None, "top_left", "bottom_right")


def _expand_kv(x: np.ndarray, heads: int) -> np.ndarray:
    """[B, H_kv, L, D] -> [B, H, L, D]: query head h reads K/V head h // (H // H_kv)."""
    kv_heads = x.shape[1]
    if heads % kv_heads:
        raise ValueError(f"q/k: the number of query heads H ({heads}) must be divisible by "
                         f"the number of K/V heads H_kv ({kv_heads})")
    return np.repeat(x, heads // kv_heads, axis=1)


def attention(q: npt.ArrayLike, k: npt.ArrayLike, v: npt.ArrayLike, mask: Optional[npt.ArrayLike] = None, *, causal: Optional[str] = None, scale: Optional[float] = None,
              layout: str = "bhld", softcap: float = 0.0, window: Optional[int] = None,
              sinks: Optional[npt.ArrayLike] = None, q_offset: Optional[int] = None,
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
    ending at its own position). ``q_offset=o`` puts query ``i`` at ``o + i``
    instead (with ``causal`` None or ``"top_left"``; ``"bottom_right"`` and an
    offset together raise ``ValueError``).

    ``sinks`` (``[H]``, one per query head): a logit in the units of the
    scaled scores that joins each row's softmax denominator only,
    ``out = sum_j e^{s_j} v_j / (e^{sink} + sum_j e^{s_j})``; the LSE stays
    the one over the keys.

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
    if q_offset is not None:
        if causal == "bottom_right":
            raise ValueError("q_offset: cannot be combined with causal='bottom_right' (which sets the offset)")
        offset = int(q_offset)
    else:
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
    sink = None
    if sinks is not None:
        sink = np.asarray(sinks, dtype=np.float64).reshape(1, heads, 1, 1)
        row_max = np.maximum(row_max, sink)  # the sink shares the softmax's shift (only for stability)
    safe_max = np.where(np.isfinite(row_max), row_max, 0.0)
    weights = np.where(visible, np.exp(scores - safe_max), 0.0)
    row_sum = weights.sum(axis=-1, keepdims=True)
    key_sum = row_sum
    if sink is not None:
        row_sum = row_sum + np.exp(sink - safe_max)
    if np.all(np.isfinite(v)):
        out = np.einsum("bhij,bhjd->bhid", weights, v)
    else:  # only keys a row sees reach it (0 * NaN would otherwise leak into every row)
        out = np.where(visible[..., None], weights[..., None] * v[:, :, None], 0.0).sum(axis=3)
    # A row that sees no key is 0; a NaN (or inf) sum, from non-finite inputs, stays NaN.
    out = np.asarray(np.divide(out, row_sum, out=np.zeros_like(out), where=row_sum != 0))
    if layout == "blhd":
        out = out.transpose(0, 2, 1, 3)
    if not return_lse:
        return out
    with np.errstate(divide="ignore"):  # over the keys only: a sink is not a key
        lse = np.where(key_sum[..., 0] != 0, safe_max[..., 0] + np.log(key_sum[..., 0]), -np.inf)
    return out, lse


def _causal_offset(causal: Union[bool, str], default: str, q_len: int, k_len: int) -> Optional[int]:
    """None without causal; else the offset o such that query i sees keys j <= i + o (the
    kernel's own alignment for ``True``, or "top_left" / "bottom_right")."""
    if not isinstance(causal, str):
        if not causal:
            return None
        causal = default
    if causal not in ("top_left", "bottom_right"):
        raise ValueError(f"causal: must be a bool, 'top_left' or 'bottom_right', got {causal!r}")
    return k_len - q_len if causal == "bottom_right" else 0


def sdpa(q: npt.ArrayLike, k: npt.ArrayLike, v: npt.ArrayLike, *, causal: Union[bool, str] = True, scale: Optional[float] = None,
         kv_seq_len: Optional[int] = None, sinks: Optional[npt.ArrayLike] = None, softcap: float = 0.0,
         window: Optional[int] = None) -> np.ndarray:
    """mlx-native's naive SDPA kernel, step by step in float32 (same signature as ``fattn.sdpa``).

    1. scores: each dot product ``q_i . k_j`` correctly rounded to float32
       (the kernel sums in float32 in its own order; the difference is a few
       float32 ulps of ``sum |q_d k_d|``), times ``scale`` in float32; with
       ``softcap > 0`` instead ``softcap * tanh(dot * (scale / softcap))``
       (float32 operations; NumPy's tanh where the kernel has fattn's);
    2. per row, the keys it sees in order (causal; with ``window=W`` only
       the last ``W`` positions up to the row's; a key a row does not see
       leaves its state as it was): ``m' = max(m, s)`` from ``m = -inf``,
       ``c = exp(m - m')``, ``w = exp(s - m')``, ``l = l*c + w``,
       ``acc = acc*c + w*v_j`` (each operation rounded to float32);
    3. with ``sinks`` (one per query head; ``-inf`` = none), after the last
       key: ``m' = max(m, sink)``, ``f = exp(m - m')``,
       ``l = l*f + exp(sink - m')``, ``acc = acc*f``;
    4. ``out = acc * (1/l)`` (0 for a row that sees no key), rounded once to
       q's dtype.
    Causal is bottom-right aligned (query ``i`` at ``kv_seq_len - Lq + i``) unless
    ``causal="top_left"``; a window needs causal (``ValueError`` otherwise).
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
    if softcap > 0:
        cap32 = f32(softcap)
        scores = cap32 * np.tanh(dots * (scale32 / cap32))
    else:
        scores = dots * scale32
    offset = _causal_offset(causal, "bottom_right", q_len, kv_len)
    if offset is not None:
        after = offset + np.arange(q_len) + 1  # one past each row's position
        visible = np.clip(after, 0, kv_len)
    else:
        visible = np.full(q_len, kv_len)
    first = np.zeros(q_len, dtype=np.int64)
    if window is not None:
        if offset is None:
            raise ValueError("window: requires causal (a window implies causal masking), got causal=False")
        first = np.clip(after - int(window), 0, kv_len)

    running_max = np.full((batch, heads, q_len), -np.inf, dtype=f32)
    running_sum = np.zeros((batch, heads, q_len), dtype=f32)
    acc = np.zeros((batch, heads, q_len, head_dim), dtype=f32)
    with np.errstate(invalid="ignore", over="ignore"):
        for j in range(kv_len):
            active = ((j >= first) & (j < visible))[None, None, :]
            s = scores[..., j]
            new_max = np.where(active, np.maximum(running_max, s), running_max)
            correction = np.where(active, np.exp(running_max - new_max), f32(1.0))
            weight = np.where(active, np.exp(s - new_max), f32(0.0))
            running_sum = np.where(active, running_sum * correction + weight, running_sum)
            update = acc * correction[..., None] + weight[..., None] * v32[:, :, j][:, :, None, :]
            acc = np.where(active[..., None], update, acc)
            running_max = new_max
        if sinks is not None:
            sink = np.asarray(sinks, dtype=f32).reshape(1, heads, 1)
            has = sink != -np.inf  # -inf: no sink, the step is skipped
            new_max = np.maximum(running_max, sink)
            f = np.where(has, np.exp(running_max - new_max), f32(1.0))
            running_sum = np.where(has, running_sum * f + np.exp(sink - new_max), running_sum)
            acc = acc * f[..., None]
    inv_sum = np.where(running_sum > 0, f32(1.0) / np.where(running_sum > 0, running_sum, f32(1.0)), f32(0.0))
    out = acc * inv_sum[..., None].astype(f32)
    return out.astype(dtype)


# --- tiled prefill -----------------------------------------------------------------

_LOG2E32 = np.float32(1.44269504089)
_INITIAL_MAX = np.float32(-np.finfo(np.float32).max / 2)


def prefill_geometry(head_dim: int, kernel: str = "auto", q_tile: Optional[int] = None,
                     k_tile: Optional[int] = None) -> Tuple[int, int]:
    """(BQ, BK): candle D <= 256 -> (32, 16), candle D > 256 -> (8, 8), llamacpp -> (8, 64)."""
    if kernel == "llamacpp":
        bq, bk = 8, 64
    else:
        bq, bk = (8, 8) if head_dim > 256 else (32, 16)
        bk = bk if k_tile is None else int(k_tile)
    return (bq if q_tile is None else int(q_tile)), bk


class _PrefillPolicy:
    """The steps in which the two prefill seed families differ, by the names of the C++ policies
    (cpp/src/prefill/engine.hpp: CandleArithmetic, LlamaCppArithmetic), in float32."""

    def __init__(self, natural_exp: bool, scale_after_dot: bool, sum_group: int, causal_overrides_mask: bool):
        self.natural_exp = natural_exp                        # exp on natural-unit scores, else exp2 on log2 units
        self.scale_after_dot = scale_after_dot                # score = dot * scale, else the scale went into Q
        self.sum_group = sum_group                            # row sums: one tree per this many keys
        self.causal_overrides_mask = causal_overrides_mask    # mask first, then causal -inf; else the reverse

    def q_factor(self, scale: np.float32, round_io: Callable[[np.ndarray], np.ndarray]) -> Optional[np.ndarray]:
        """The factor Q is staged with (None: Q as it came)."""
        return None if self.scale_after_dot else round_io(np.asarray(scale * _LOG2E32, dtype=np.float32))

    def mask_term(self, mask: np.ndarray) -> np.ndarray:
        """What an additive mask value adds to a score."""
        if self.natural_exp:  # through half, in natural units
            return mask.astype(np.float32).astype(np.float16).astype(np.float32)
        with np.errstate(over="ignore"):
            return _LOG2E32 * mask.astype(np.float32)

    def exp(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(np.exp(x) if self.natural_exp else np.exp2(x))

    def normalise(self, acc: np.ndarray, row_sum: np.ndarray) -> np.ndarray:
        f32 = np.float32
        if self.natural_exp:  # a reciprocal, then a multiply
            inv = np.where(row_sum == 0, f32(0), f32(1) / np.where(row_sum == 0, f32(1), row_sum))
            return acc * inv[..., None]
        return np.where(row_sum[..., None] == 0, f32(0), acc / np.where(row_sum == 0, f32(1), row_sum)[..., None])

    def lse(self, m64: np.ndarray, l64: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.asarray(m64 + np.log(l64) if self.natural_exp else (m64 + np.log2(l64)) * np.log(2.0))


_CANDLE = _PrefillPolicy(natural_exp=False, scale_after_dot=False, sum_group=8, causal_overrides_mask=False)
_LLAMACPP = _PrefillPolicy(natural_exp=True, scale_after_dot=True, sum_group=64, causal_overrides_mask=True)


def _tree_sum(p: np.ndarray) -> np.ndarray:
    """Sum over the last axis (a power of two) as pairs, pairs of pairs, ... in float32."""
    while p.shape[-1] > 1:
        p = p[..., 0::2] + p[..., 1::2]
    return p[..., 0]


def flash_attn_prefill(q: npt.ArrayLike, k: npt.ArrayLike, v: npt.ArrayLike, mask: Optional[npt.ArrayLike] = None,
                       *, causal: Union[bool, str] = False, scale: Optional[float] = None, softcap: float = 0.0,
                       window: Optional[int] = None, sinks: Optional[npt.ArrayLike] = None, q_offset: int = 0,
                       layout: str = "bhld",
                       blk: Optional[npt.ArrayLike] = None, kernel: str = "auto", nsg: int = 8,
                       return_lse: bool = False, q_tile: Optional[int] = None, k_tile: Optional[int] = None
                       ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """The tiled prefill kernels' arithmetic in NumPy (same signature as ``fattn.flash_attn_prefill``).

    ``kernel="auto"``/``"candle"`` (candle/MLX-derived), per query row, float32 throughout:

    1. ``c = rT(f32(scale * log2e))``; ``q' = rT(q * c)`` (rT: round to the I/O type);
    2. per K tile of BK keys (only the tiles a causal query block reaches; none that
       ``blk`` marks 0): scores ``s = q' . k`` (here the correctly rounded float32 of the
       exact dot; the kernel sums in order, or for bf16 as fattn's bf16 dot product, pairs
       with DAZ/FTZ, docs/numerics.md §4; a few float32 ulps away); keys past Lk and,
       with ``causal``, keys after the query get ``-inf``; a bool mask's False gives
       ``-inf``; an additive mask adds ``f32(log2e * mask)`` (not where ``blk`` is 2);
    3. ``m' = max(m, max s)`` from ``m = -FLT_MAX/2``; ``p = exp2(s - m')`` (kept
       float32); ``f = exp2(m - m')``; ``l = l*f + (tree sums of p per 8 keys, added in
       order)``; ``O = O*f + sum_j p_j v_j`` (rounded once per tile here; the kernel
       rounds after each key's fused multiply-add);
    4. ``out = rT(O / l)``, 0 where ``l == 0``. LSE = ``ln2 * (m + log2 l)``.

    ``kernel="llamacpp"`` (D = 512): Q unscaled; ``s = (q . k) * scale``; an additive mask
    adds ``float(half(mask))``, then causal ``-inf``; natural ``exp``; tiles of 64 keys with
    one tree sum per tile; ``out = rT(O * (1/l))``. LSE = ``m + ln l``.

    Variants (numerics §4, "Variants"): ``q_offset`` moves the query positions (causal: key j
    seen iff ``j <= q_offset + i``); ``window=W`` also hides keys ``j <= q_offset + i - W`` and
    starts each block at the tile holding its first row's oldest key (it implies causal);
    ``softcap`` makes the score ``out * tanh(dot * in)`` (candle, log2 units:
    ``out = f32(softcap * log2e)``, ``in = f32(1 / (softcap * log2e))``; llamacpp:
    ``out = softcap``, ``in = f32(scale / softcap)``; NumPy's tanh here, fattn's own in the
    kernel, both within 2 ulp); ``sinks`` (``[H]``; candle: ``f32(log2e * sink)``) are folded
    after the last tile: ``m' = max(m, sink)``, ``f = exp(m - m')``, ``l' = l*f + exp(sink - m')``,
    ``O' = O*f``, with the LSE taken before.
    """
    if kernel not in ("auto", "candle", "llamacpp"):
        raise ValueError(f"kernel: must be 'auto', 'candle' or 'llamacpp', got {kernel!r}")
    policy = _LLAMACPP if kernel == "llamacpp" else _CANDLE
    dtype = np.asarray(q).dtype
    f32 = np.float32
    def to_bhld(x: npt.ArrayLike) -> np.ndarray:
        a = np.asarray(x)
        return a.transpose(0, 2, 1, 3) if layout == "blhd" else a

    q32, k32, v32 = (to_bhld(x).astype(f32) for x in (q, k, v))
    batch, heads, q_len, head_dim = q32.shape
    k_len = k32.shape[2]
    k32, v32 = _expand_kv(k32, heads), _expand_kv(v32, heads)
    bq, bk = prefill_geometry(head_dim, kernel, q_tile, k_tile)
    scale32 = f32(1.0) / np.sqrt(f32(head_dim)) if scale is None else f32(scale)

    def round_io(x: np.ndarray) -> np.ndarray:
        return x.astype(dtype).astype(f32)

    factor = policy.q_factor(scale32, round_io)
    q_staged = q32 if factor is None else round_io(q32 * factor)

    mask_bool = mask_term = None
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask), (batch, heads, q_len, k_len))
        if mask.dtype == bool:
            mask_bool = mask
        else:
            mask_term = policy.mask_term(mask)
    group = policy.sum_group

    n_tiles = -(-k_len // bk)
    block_of_row = np.arange(q_len) // bq
    row_end = np.minimum((block_of_row + 1) * bq, q_len)
    offset = _causal_offset(causal, "top_left", q_len, k_len)
    if q_offset:
        if causal == "bottom_right":
            raise ValueError("q_offset: cannot be combined with causal='bottom_right' (which sets the offset)")
        offset = q_offset
    if window is not None and offset is None:  # a window implies causal
        offset = q_offset
    is_causal = offset is not None
    diag = 0 if offset is None else offset  # query i sees keys j <= i + diag
    tile_limit = np.clip(-(-(row_end + diag) // bk), 0, n_tiles) if is_causal else np.full(q_len, n_tiles)
    oldest = block_of_row * bq + diag - (window or 0) + 1  # each block's first row's oldest visible key
    tile_start = np.where(oldest > 0, oldest // bk, 0) if window is not None else np.zeros(q_len, dtype=np.int64)
    rows = np.arange(q_len)[:, None]
    if softcap > 0:
        if policy.scale_after_dot:
            cap_out, cap_in = f32(softcap), f32(scale32 / f32(softcap))
        else:
            cap_out, cap_in = f32(softcap * float(_LOG2E32)), f32(1.0 / (softcap * float(_LOG2E32)))

    row_max = np.full((batch, heads, q_len), _INITIAL_MAX, dtype=f32)
    row_sum = np.zeros((batch, heads, q_len), dtype=f32)
    acc = np.zeros((batch, heads, q_len, head_dim), dtype=f32)
    with np.errstate(invalid="ignore", over="ignore"):
        for tile in range(n_tiles):
            j0, j1 = tile * bk, min(k_len, tile * bk + bk)
            action = np.ones(q_len, dtype=np.uint8) if blk is None else np.asarray(blk)[block_of_row, tile]
            active = (tile >= tile_start) & (tile < tile_limit) & (action != 0)
            if not active.any():
                continue
            keys = np.arange(j0, j0 + bk)[None, :]
            dots = np.einsum("bhid,bhjd->bhij", q_staged.astype(np.float64), k32[:, :, j0:j1].astype(np.float64))
            s = np.full((batch, heads, q_len, bk), -np.inf, dtype=f32)
            s[..., :j1 - j0] = dots.astype(f32)
            if softcap > 0:
                s = cap_out * np.tanh(s * cap_in)
            elif policy.scale_after_dot:
                s = s * scale32
            future = (keys > rows + diag) if is_causal else np.zeros((q_len, bk), dtype=bool)
            if window is not None:
                future = future | (keys <= rows + diag - window)
            if not policy.causal_overrides_mask:
                s = np.where(future, f32(-np.inf), s)
            add = (action != 2)[:, None]
            if mask_bool is not None:
                blocked = np.zeros((batch, heads, q_len, bk), dtype=bool)
                blocked[..., :j1 - j0] = ~mask_bool[..., j0:j1]
                s = np.where(blocked & add, f32(-np.inf), s)
            if mask_term is not None:
                term = np.zeros((batch, heads, q_len, bk), dtype=f32)
                term[..., :j1 - j0] = mask_term[..., j0:j1]
                s = np.where(add, s + term, s)
            if policy.causal_overrides_mask:
                s = np.where(future, f32(-np.inf), s)
            new_max = np.maximum(row_max, s.max(axis=-1))
            p = policy.exp(s - new_max[..., None]).astype(f32)
            rescale = policy.exp(row_max - new_max).astype(f32)
            tile_sum = np.zeros_like(row_sum)
            for g in range(0, bk, group):
                tile_sum = tile_sum + _tree_sum(p[..., g:g + group])
            new_sum = row_sum * rescale + tile_sum
            pv = np.einsum("bhij,bhjd->bhid", p[..., :j1 - j0].astype(np.float64),
                           v32[:, :, j0:j1].astype(np.float64))
            new_acc = ((acc * rescale[..., None]).astype(np.float64) + pv).astype(f32)
            act = active[None, None, :]
            row_sum = np.where(act, new_sum, row_sum)
            acc = np.where(act[..., None], new_acc, acc)
            row_max = np.where(act, new_max, row_max)
        key_max, key_sum = row_max, row_sum
        if sinks is not None:
            sink = np.asarray(sinks, dtype=f32)
            if not policy.natural_exp:
                sink = _LOG2E32 * sink
            sink = np.broadcast_to(sink[None, :, None], row_max.shape)
            folded = sink != -np.inf
            new_max = np.maximum(row_max, sink)
            f = policy.exp(row_max - new_max).astype(f32)
            row_sum = np.where(folded, row_sum * f + policy.exp(sink - new_max).astype(f32), row_sum)
            acc = np.where(folded[..., None], acc * f[..., None], acc)
        out = policy.normalise(acc, row_sum)
    out = out.astype(dtype)
    if layout == "blhd":
        out = out.transpose(0, 2, 1, 3)
    if not return_lse:
        return out
    lse = policy.lse(key_max.astype(np.float64), key_sum.astype(np.float64))  # over the keys only
    lse = np.where(key_sum == 0, -np.inf, lse).astype(f32)
    return out, lse


# --- vec decode ----------------------------------------------------------------------

_DECODE_CHUNK = 32


_QUANT_BLOCK = 32  # elements per block along D


def flash_attn_varlen(q: npt.ArrayLike, k: npt.ArrayLike, v: npt.ArrayLike, cu_seqlens_q: npt.ArrayLike,
                      cu_seqlens_k: npt.ArrayLike, *, causal: Union[bool, str] = False, scale: Optional[float] = None,
                      softcap: float = 0.0, window: Optional[int] = None, sinks: Optional[npt.ArrayLike] = None,
                      kernel: str = "auto", return_lse: bool = False
                      ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """``fattn.flash_attn_varlen``'s arithmetic: :func:`flash_attn_prefill` on each packed sequence
    alone (``layout="blhd"``; ``causal=True`` is bottom-right per sequence, ``"top_left"`` as
    given; a window aligns as causal does). Rows of a sequence with no key are 0 (LSE ``-inf``).
    Returns ``[total_q, H, D]`` in q's dtype (and the LSE ``[total_q, H]``)."""
    q_arr, k_arr, v_arr = np.asarray(q), np.asarray(k), np.asarray(v)
    cq, ck = (np.asarray(c).astype(np.int64) for c in (cu_seqlens_q, cu_seqlens_k))
    out = np.zeros(q_arr.shape, dtype=q_arr.dtype)
    lse = np.full(q_arr.shape[:2], -np.inf, dtype=np.float32)
    align = "top_left" if causal == "top_left" else "bottom_right"
    for b in range(len(cq) - 1):
        (a, e), (ka, ke) = (cq[b], cq[b + 1]), (ck[b], ck[b + 1])
        if e == a or ke == ka:
            continue  # no query, or no key: zeros and -inf
        seq = flash_attn_prefill(q_arr[None, a:e], k_arr[None, ka:ke], v_arr[None, ka:ke],
                                 causal=align if (causal or window) else False, scale=scale, softcap=softcap,
                                 window=window, sinks=sinks, layout="blhd", kernel=kernel, return_lse=True)
        out[a:e], lse[a:e] = seq[0][0], np.moveaxis(seq[1][0], 0, -1)
    return (out, lse) if return_lse else out


def gather_paged(pool: Any, block_table: npt.ArrayLike, kv_seq_len: int, b: int) -> Any:
    """Sequence ``b``'s cache gathered from a paged pool ``[num_blocks, block_size, H_kv, D]``
    (or a quantized pool: an object with ``.blocks [num_blocks, block_size, H_kv, W]``,
    ``.format``, ``.head_dim``): ``[H_kv, kv_seq_len, D]`` (or a quantized cache of those rows),
    position ``p`` from row ``p % block_size`` of block ``block_table[b, p // block_size]``."""
    blocks = getattr(pool, "blocks", pool)
    arr = np.asarray(blocks)
    pos = np.arange(int(kv_seq_len))
    rows = arr[np.asarray(block_table)[b, pos // arr.shape[1]], pos % arr.shape[1]]  # [L, H_kv, W or D]
    gathered = np.ascontiguousarray(np.moveaxis(rows, 0, 1))
    if not hasattr(pool, "blocks"):
        return gathered
    return SimpleNamespace(blocks=gathered, format=str(getattr(pool, "format")), head_dim=int(getattr(pool, "head_dim")))


def _cache_values(cache: object) -> np.ndarray:
    """A decode cache as float32: an array widened, or a quantized cache (an object with
    ``.blocks``, ``.format``, ``.head_dim``) dequantized."""
    if all(hasattr(cache, name) for name in ("blocks", "format", "head_dim")):
        return dequantize_kv(getattr(cache, "blocks"), str(getattr(cache, "format")),
                                 int(getattr(cache, "head_dim")))
    return np.asarray(cache).astype(np.float32)


def _is_tq4(cache: object) -> bool:
    return all(hasattr(cache, name) for name in ("blocks", "format", "head_dim")) and \
        str(getattr(cache, "format")) == "tq4"


def _kernel_values(cache: object) -> np.ndarray:
    """What the decode kernel reads: :func:`_cache_values`, but a tq4 cache's rotated values."""
    if _is_tq4(cache):
        return tq4_rotated_values(getattr(cache, "blocks"), int(getattr(cache, "head_dim")))
    return _cache_values(cache)


def _decode_views(q: npt.ArrayLike, k_cache: object, v_cache: object
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    q32 = np.asarray(q, dtype=np.float32)
    if _is_tq4(k_cache):  # scores in the rotated domain: Q turns as the cache's rows did
        q32 = tq4_rotate(q32)
    k32, v32 = _kernel_values(k_cache), _kernel_values(v_cache)
    if q32.ndim == 2:
        q32, k32, v32 = q32[None], k32[None], v32[None]
    return q32, _expand_kv(k32, q32.shape[1]), _expand_kv(v32, q32.shape[1])


def flash_attn_vec_partials(q: npt.ArrayLike, k_cache: Any, v_cache: Any, *, kv_seq_len: int,
                            scale: Optional[float] = None, mask: str = "none", window: int = 0,
                            softcap: float = 0.0, nwg: int = 32, sinks: Optional[npt.ArrayLike] = None,
                            ring_start: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The vec decode kernel's per-group partials, step by step in float32 (same signature as
    ``fattn.flash_attn_vec_partials``; returns ``(o, s, m)``). A quantized cache (an object with
    ``.blocks``, ``.format``, ``.head_dim``) is read as its exact values (:func:`dequantize_blocks`).

    1. ``qh = float32(float16(q))`` (Q staged as half);
    2. group ``g`` takes chunks of 32 positions ``g, g+nwg, g+2*nwg, ...`` below ``kv_seq_len``;
       a chunk whose positions all lie before the window start is skipped;
    3. scores: ``s = fma(qh . k, scale, mask)`` with ``mask = -65504`` before the window start and
       0 otherwise (the dot here is the correctly rounded float32 of the exact dot; the kernel
       sums per lane and then across 32 lanes, a few float32 ulps away); with ``softcap > 0``,
       ``s = softcap * tanh(dot * f32(scale / softcap)) + mask``; positions past ``kv_seq_len``
       have no weight;
    4. ``m' = max(m, max s)`` from ``m = -FLT_MAX/2``; ``ms = exp(m - m')``; ``w = exp(s - m')``;
       ``S = S*ms + tree32(w)``; ``O = O*ms + sum_p w_p v_p`` (the chunk's sum rounded once here,
       an fma chain in the kernel);
    5. with ``sinks``, group 0 (after its chunks, even if it had none to see) takes its head's
       sink as one more step with a single score and no value: ``m' = max(m, sink)``, ``f =
       exp(m - m')``, ``S = S*f + exp(sink - m')``, ``O = O*f``; a sink of ``-inf`` is skipped.

    ``ring_start``: logical position ``p`` is read from slot ``(ring_start + p) % capacity``;
    everything above is in logical positions.

    A tq4 ``k_cache`` is read in its rotated domain with ``q`` rotated first
    (:func:`tq4_rotate`); with a tq4 ``v_cache`` each group that saw a chunk has its ``o`` turned
    back (:func:`tq4_unrotate`) after step 5.
    """
    f32 = np.float32
    q32, k32, v32 = _decode_views(q, k_cache, v_cache)
    batch, heads, head_dim = q32.shape
    kv_len = int(kv_seq_len)
    if ring_start is not None:  # the ring unrolled: logical position p from slot (ring_start + p) % capacity
        slots = (int(ring_start) + np.arange(kv_len)) % k32.shape[2]
        k32, v32 = k32[:, :, slots], v32[:, :, slots]
    scale32 = f32(1.0) / np.sqrt(f32(head_dim)) if scale is None else f32(scale)
    window_start = max(0, kv_len - int(window)) if mask == "sliding_window" and window > 0 else 0
    qh = q32.astype(np.float16).astype(f32)
    o = np.zeros((batch, heads, nwg, head_dim), dtype=f32)
    s_out = np.zeros((batch, heads, nwg), dtype=f32)
    m_out = np.full((batch, heads, nwg), _INITIAL_MAX, dtype=f32)
    with np.errstate(over="ignore", invalid="ignore"):
        for g in range(nwg):
            row_max = np.full((batch, heads), _INITIAL_MAX, dtype=f32)
            row_sum = np.zeros((batch, heads), dtype=f32)
            acc = np.zeros((batch, heads, head_dim), dtype=f32)
            for p0 in range(g * _DECODE_CHUNK, kv_len, nwg * _DECODE_CHUNK):
                p1 = min(kv_len, p0 + _DECODE_CHUNK)
                if p1 <= window_start:
                    continue
                kc, vc = k32[:, :, p0:p1], v32[:, :, p0:p1]
                dots = np.einsum("bhd,bhjd->bhj", qh.astype(np.float64), kc.astype(np.float64)).astype(f32)
                masked = np.where(np.arange(p0, p1) < window_start, -65504.0, 0.0)
                if softcap > 0:
                    s = (f32(softcap) * np.tanh(dots * f32(scale32 / f32(softcap))) + masked.astype(f32)).astype(f32)
                else:
                    s = (dots.astype(np.float64) * np.float64(scale32) + masked).astype(f32)
                scores = np.full((batch, heads, _DECODE_CHUNK), -np.inf, dtype=f32)
                scores[..., :p1 - p0] = s
                new_max = np.maximum(row_max, scores.max(axis=-1))
                rescale = np.exp(row_max - new_max).astype(f32)
                w = np.exp(scores - new_max[..., None]).astype(f32)
                row_sum = row_sum * rescale + _tree_sum(w)
                chunk = np.einsum("bhj,bhjd->bhd", w[..., :p1 - p0].astype(np.float64),
                                  vc.astype(np.float64)).astype(f32)
                acc = acc * rescale[..., None] + chunk
                row_max = new_max
            if g == 0 and sinks is not None:
                sink = np.broadcast_to(np.asarray(sinks, dtype=f32), (batch, heads))
                has = sink != -np.inf
                new_max = np.maximum(row_max, sink)
                f = np.exp(row_max - new_max).astype(f32)
                row_sum = np.where(has, row_sum * f + np.exp(sink - new_max).astype(f32), row_sum).astype(f32)
                acc = np.where(has[..., None], acc * f[..., None], acc).astype(f32)
                row_max = np.where(has, new_max, row_max).astype(f32)
            if _is_tq4(v_cache) and g * _DECODE_CHUNK < kv_len:
                acc = tq4_unrotate(acc)
            o[:, :, g], s_out[:, :, g], m_out[:, :, g] = acc, row_sum, row_max
    if np.asarray(q).ndim == 2:
        return o[0], s_out[0], m_out[0]
    return o, s_out, m_out


def flash_attn_vec_reduce(o: npt.ArrayLike, s: npt.ArrayLike, m: npt.ArrayLike) -> np.ndarray:
    """The reduce: ``M = max_g m_g``, ``w_g = exp(m_g - M)``, ``S = tree(s_g w_g)``,
    ``out = tree(o_g w_g) * (S == 0 ? 0 : 1/S)``; trees over 32 lanes (or the next power of two
    above nwg), idle lanes holding zeros and the initial max."""
    f32 = np.float32
    o, s, m = (np.asarray(x, dtype=f32) for x in (o, s, m))
    nwg = o.shape[-2]
    lanes = 32
    while lanes < nwg:
        lanes *= 2
    pad = lanes - nwg
    global_max = np.maximum(m.max(axis=-1), _INITIAL_MAX)
    weight = np.exp(m - global_max[..., None]).astype(f32)
    terms = np.concatenate([s * weight, np.zeros(s.shape[:-1] + (pad,), f32)], axis=-1)
    total = _tree_sum(terms)
    inv = np.where(total == 0, f32(0), f32(1) / np.where(total == 0, f32(1), total))
    products = np.moveaxis(o * weight[..., None], -2, -1)  # [..., D, nwg]
    products = np.concatenate([products, np.zeros(products.shape[:-1] + (pad,), f32)], axis=-1)
    return (_tree_sum(products) * inv[..., None]).astype(f32)


def flash_attn_vec(q: npt.ArrayLike, k_cache: Any, v_cache: Any, *, kv_seq_len: Any,
                   scale: Optional[float] = None, mask: str = "none", window: int = 0, softcap: float = 0.0,
                   nwg: int = 32, sinks: Optional[npt.ArrayLike] = None, ring_start: Optional[int] = None,
                   block_table: Optional[npt.ArrayLike] = None) -> np.ndarray:
    """The vec decode kernel's arithmetic in NumPy: partials, then reduce (same signature as
    ``fattn.flash_attn_vec``). With ``block_table``: each sequence on its cache gathered from the
    pools (:func:`gather_paged`); a sequence of length 0 gives 0."""
    if block_table is not None:
        q32 = np.asarray(q, dtype=np.float32)
        lens = np.broadcast_to(np.asarray(kv_seq_len), (q32.shape[0],))
        out = np.zeros(q32.shape, dtype=np.float32)
        for b, n in enumerate(lens):
            if n > 0:
                out[b] = flash_attn_vec(q32[b], gather_paged(k_cache, block_table, int(n), b),
                                        gather_paged(v_cache, block_table, int(n), b), kv_seq_len=int(n),
                                        scale=scale, mask=mask, window=window, softcap=softcap, nwg=nwg, sinks=sinks)
        return out
    return flash_attn_vec_reduce(*flash_attn_vec_partials(q, k_cache, v_cache, kv_seq_len=kv_seq_len, scale=scale,
                                                          mask=mask, window=window, softcap=softcap, nwg=nwg,
                                                          sinks=sinks, ring_start=ring_start))


def merge_attention(outputs: Sequence[npt.ArrayLike], lses: Sequence[npt.ArrayLike], *,
                    sinks: Optional[npt.ArrayLike] = None, return_lse: bool = False, head_axis: Optional[int] = None
                    ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """The exact merge, in float64, of attention results over disjoint key sets as given
    (``outputs[i]`` ``[..., D]``, ``lses[i]`` ``[...]``, natural log, ``-inf`` for a set with no
    key): ``a_i = e^{lse_i} / sum_j e^{lse_j}``, ``out = sum_i a_i out_i``, ``lse = ln sum_i
    e^{lse_i}``; a row with no key anywhere is 0 with LSE ``-inf``. What ``fattn.merge_attention``
    computes in float32 (numerics §6), to compare with ``fattn.bounds.merge_bound``.

    ``sinks`` (``[H]``, the head axis chosen as by ``fattn.merge_attention``: ``head_axis``, by
    default 1 for 4-D outputs and -2 otherwise): the same steps as the kernel, exactly: the
    denominator becomes ``sum_i e^{lse_i - M} + e^{sink - M}`` (``-inf`` = no sink); the LSE
    stays the keys'."""
    outs = np.stack([np.asarray(o).astype(np.float64) for o in outputs])  # [n, ..., D]
    ls = np.stack([np.asarray(x).astype(np.float64) for x in lses])      # [n, ...]
    top = ls.max(axis=0)
    empty = np.isneginf(top)
    shift = np.where(empty, 0.0, top)
    w = np.exp(ls - shift)  # exactly 0 for -inf parts
    total = w.sum(axis=0)
    safe = np.where(empty, 1.0, total)
    denominator = safe
    if sinks is not None:
        shape = outs.shape[1:]
        axis = (1 if len(shape) == 4 else len(shape) - 2) if head_axis is None else int(head_axis) % len(shape)
        sink = np.asarray(sinks, dtype=np.float64).reshape((-1,) + (1,) * (len(shape) - 2 - axis))
        with np.errstate(over="ignore"):  # a sink far above every LSE: the output is 0
            denominator = safe + np.exp(sink - shift)
    out = np.where(empty[..., None], 0.0, np.einsum("n...,n...d->...d", w / denominator[None], outs))
    if not return_lse:
        return out
    return out, np.where(empty, -np.inf, shift + np.log(safe))


# --- quantized caches ------------------------------------------------------------------------
# ggml's block_q8_0 / block_q4_0 (docs/numerics.md, "Quantized caches"), written from the block
# definitions with NumPy's float32 arithmetic (every product and sum rounded to float32 on its
# own) and NumPy's float16 conversion (round to nearest even) for the scale.

_QK = 32  # elements per block
_BLOCK_BYTES = {"q8_0": 2 + _QK, "q4_0": 2 + _QK // 2}
_LARGEST = {"q8_0": 65504.0 * 127, "q4_0": 65504.0 * 8, "tq4": 2.0 ** 50}
_FORMATS = ("q8_0", "q4_0", "tq4")


def quant_row_bytes(format: str, head_dim: int) -> int:
    """Bytes of one row of ``head_dim`` elements: q8_0 ``34 * head_dim / 32``, q4_0
    ``18 * head_dim / 32``, tq4 ``head_dim / 2 + 4`` (``+ 8`` for head_dim 512)."""
    if format not in _FORMATS:
        raise ValueError(f"format: {format!r} is not one of {_FORMATS}")
    if head_dim <= 0 or head_dim % _QK:
        raise ValueError(f"head_dim: must be a positive multiple of {_QK}, got {head_dim}")
    if format == "tq4":
        if head_dim > 512 or head_dim & (head_dim - 1):
            raise ValueError(f"head_dim: tq4 needs a power of two from 32 to 512, got {head_dim}")
        return head_dim // 2 + 4 * _tq4_norms(head_dim)
    return head_dim // _QK * _BLOCK_BYTES[format]


# tq4, mlx-native's TurboQuant 4-bit rows (docs/numerics.md, "Quantized caches"): the row
# rotated by a normalized Walsh-Hadamard transform (for D = 256 and 512 after fixed sign flips),
# scaled by its norm to unit variance, each coordinate the index of the nearest Lloyd-Max
# centroid of N(0, 1). Every step below is one float32 operation per element, in the kernel's
# order, so the bytes equal fattn's.
TQ4_CODEBOOK = np.array([-2.7325896, -2.0690172, -1.6180464, -1.2562312, -0.9423405, -0.6567591,
                         -0.3880483, -0.1283950, 0.1283950, 0.3880483, 0.6567591, 0.9423405,
                         1.2562312, 1.6180464, 2.0690172, 2.7325896], dtype=np.float32)
TQ4_BOUNDARIES = np.array([-2.4008034, -1.8435318, -1.4371388, -1.0992859, -0.7995498, -0.5224037,
                           -0.2582217, 0.0, 0.2582217, 0.5224037, 0.7995498, 1.0992859, 1.4371388,
                           1.8435318, 2.4008034], dtype=np.float32)
_TQ4_SIGN_BYTES = np.array([
    0xa7, 0x3b, 0x91, 0xf4, 0x6d, 0xc2, 0x58, 0x0e, 0xb3, 0x7f, 0x24, 0xd6, 0x89, 0x45, 0xea, 0x1c,
    0x63, 0xaf, 0xd8, 0x52, 0x97, 0x0b, 0xe1, 0x3d, 0x76, 0xc4, 0x19, 0xfe, 0x4a, 0x85, 0x2c, 0xdb,
    0xd3, 0x4e, 0xa8, 0x17, 0x9c, 0x5b, 0xe6, 0x31, 0x72, 0xb9, 0x0d, 0xf5, 0x43, 0x8a, 0x6e, 0xc7,
    0x58, 0x2f, 0x94, 0xe1, 0xb6, 0x3d, 0x0a, 0x7c, 0xc5, 0x61, 0xd8, 0x4f, 0xa3, 0x97, 0x1e, 0x85],
    dtype=np.uint8)


def _tq4_norms(head_dim: int) -> int:
    return 2 if head_dim == 512 else 1


def _tq4_signs(head_dim: int) -> np.ndarray:
    """+1/-1 per coordinate (float32): bit j % 8 of byte j / 8 set means -1, for D = 256 and 512;
    all +1 for smaller D (mlx-native's shared-memory kernel has no sign flips)."""
    if head_dim < 256:
        return np.ones(head_dim, dtype=np.float32)
    bits = np.unpackbits(_TQ4_SIGN_BYTES, bitorder="little")[:head_dim]
    return np.where(bits == 1, np.float32(-1), np.float32(1)).astype(np.float32)


def _tq4_fwht(x: np.ndarray) -> np.ndarray:
    """The normalized Walsh-Hadamard transform along the last axis in float32: butterflies
    ``(a + b, a - b)`` on pairs ``(j, j + h)`` for ``h = 1, 2, 4, ...``, then times
    ``float32(1/sqrt(D))``."""
    y = np.array(x, dtype=np.float32)
    d = y.shape[-1]
    h = 1
    while h < d:
        v = y.reshape(y.shape[:-1] + (d // (2 * h), 2, h))
        a, b = v[..., 0, :].copy(), v[..., 1, :].copy()
        v[..., 0, :], v[..., 1, :] = a + b, a - b
        h *= 2
    return (y * np.float32(1.0 / np.sqrt(d))).astype(np.float32)


def tq4_rotate(x: npt.ArrayLike) -> np.ndarray:
    """Into tq4's rotated domain along the last axis (float32): the sign flips, then the
    normalized transform. How the decode turns Q."""
    x32 = np.asarray(x, dtype=np.float32)
    return _tq4_fwht(x32 * _tq4_signs(x32.shape[-1]))


def tq4_unrotate(x: npt.ArrayLike) -> np.ndarray:
    """Back from tq4's rotated domain (float32): the transform, then the sign flips. How the
    decode turns its output and :func:`dequantize_kv` its values."""
    x32 = np.asarray(x, dtype=np.float32)
    out: np.ndarray = (_tq4_fwht(x32) * _tq4_signs(x32.shape[-1])).astype(np.float32)
    return out


def _tq4_square_sum(r: np.ndarray, per_lane: int) -> np.ndarray:
    """Sum of squares over the last axis in the kernels' order: ``per_lane`` > 0, 32 (or 16)
    lanes each adding its run of consecutive squares, then a tree; 0, the strided halving
    ``s[i] += s[i + stride]``."""
    sq = (r * r).astype(np.float32)
    if per_lane:
        runs = sq.reshape(sq.shape[:-1] + (-1, per_lane))
        acc = np.zeros(runs.shape[:-1], dtype=np.float32)
        for i in range(per_lane):
            acc = (acc + runs[..., i]).astype(np.float32)
        return _tree_sum(acc)
    while sq.shape[-1] > 1:
        half = sq.shape[-1] // 2
        sq = (sq[..., :half] + sq[..., half:]).astype(np.float32)
    last: np.ndarray = sq[..., 0]
    return last


def _tq4_quantize(x32: np.ndarray) -> np.ndarray:
    d = x32.shape[-1]
    r = tq4_rotate(x32)
    f32 = np.float32
    with np.errstate(divide="ignore", invalid="ignore"):
        if d == 512:  # each half by its RMS: u = r * (1/rms)
            halves = r.reshape(r.shape[:-1] + (2, 256))
            rms = np.sqrt((_tq4_square_sum(halves, 16) / f32(256)).astype(f32)).astype(f32)  # [..., 2]
            scale = np.where(rms > f32(1e-10), f32(1) / rms, f32(0)).astype(f32)
            u = (halves * scale[..., None]).astype(f32).reshape(r.shape)
            norms = rms
        elif d == 256:  # u = r * ((1/norm) * 16)
            norm = np.sqrt(_tq4_square_sum(r, 8)).astype(f32)
            scale = (np.where(norm > f32(1e-10), f32(1) / norm, f32(0)) * f32(16)).astype(f32)
            u = (r * scale[..., None]).astype(f32)
            norms = norm[..., None]
        else:  # u = (r / norm) * sqrt(D)
            norm = np.sqrt(_tq4_square_sum(r, 0)).astype(f32)
            unit = (r / norm[..., None]).astype(f32)
            u = np.where((norm > f32(1e-10))[..., None], (unit * f32(np.sqrt(d))).astype(f32), f32(0))
            norms = norm[..., None]
    index = (u[..., None] > TQ4_BOUNDARIES).sum(axis=-1).astype(np.uint8)
    nibbles = (index[..., 0::2] | (index[..., 1::2] << 4)).astype(np.uint8)
    norm_bytes = np.ascontiguousarray(norms.astype("<f4")).view(np.uint8)
    return np.concatenate([nibbles, norm_bytes], axis=-1)


def tq4_rotated_values(blocks: npt.ArrayLike, head_dim: int) -> np.ndarray:
    """A tq4 cache's values in the rotated domain (float32 ``[..., head_dim]``), as the decode
    reads them: ``centroid[index] * scale`` with ``scale = float32(norm * float32(1/sqrt(D)))``,
    or for D = 512 each half's stored RMS."""
    b = np.asarray(blocks)
    if b.dtype != np.uint8:
        raise TypeError(f"blocks: dtype must be uint8, got {b.dtype}")
    row_bytes = quant_row_bytes("tq4", head_dim)
    if b.shape[-1] != row_bytes:
        raise ValueError(f"blocks: the last axis must be {row_bytes} bytes, got {b.shape[-1]}")
    half = head_dim // 2
    nibbles = b[..., :half]
    index = np.stack([nibbles & 0x0F, nibbles >> 4], axis=-1).reshape(b.shape[:-1] + (head_dim,))
    norms = np.ascontiguousarray(b[..., half:]).view("<f4").astype(np.float32)
    if head_dim == 512:
        scale = np.repeat(norms, 256, axis=-1)
    else:
        scale = (norms * np.float32(1.0 / np.sqrt(head_dim))).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        return (TQ4_CODEBOOK[index] * scale).astype(np.float32)


def _inverse(d: np.ndarray) -> np.ndarray:
    """1/d in float32; 0 where d is 0 or 1/d overflows (fattn's definition of a block ggml's
    reference leaves undefined: it then converts inf or NaN to an integer)."""
    with np.errstate(divide="ignore", over="ignore"):
        inv = np.float32(1) / np.where(d == 0, np.float32(1), d)
    return np.where((d == 0) | np.isinf(inv), np.float32(0), inv).astype(np.float32)


def _scale_bytes(d: np.ndarray) -> np.ndarray:
    """float32 scales [...] -> their float16 (nearest even) as 2 little-endian bytes [..., 2]."""
    half = d.astype("<f2")
    return half.view(np.uint8).reshape(d.shape + (2,))


def quantize_kv(x: npt.ArrayLike, format: str) -> np.ndarray:
    """``x`` ``[..., D]`` (float32, float16 or bfloat16; D a multiple of 32) as ggml blocks:
    uint8 ``[..., bytes_per_row]``, block after block along D (what ``fattn.quantize_kv(x,
    format).blocks`` holds). Raises ValueError for non-finite values or ones whose block scale
    would overflow float16, as fattn does.

    q8_0 per block: ``amax = max|x|``, ``d = amax / 127``, ``id = 1/d`` (0 if d is 0), ``q =
    round(x * id)`` half away from zero as int8; bytes: float16(d), then the 32 q.
    q4_0 per block: ``m`` = the first element of largest ``|x|`` (+0 for a block of zeros),
    ``d = m / -8``, ``id`` as for q8_0, ``q = min(15, trunc(x * id + 8.5))``; bytes:
    float16(d), then byte ``j`` = ``q[j] | q[j + 16] << 4``.
    tq4 per row (D a power of two, 32 to 512): ``r = tq4_rotate(x)``; D < 256: ``norm =
    sqrt(sum r^2)`` (strided halving), ``u = (r / norm) * float32(sqrt(D))``; D = 256: ``norm``
    with 32 lanes of 8 then a tree, ``u = r * ((1/norm) * 16)``; D = 512: per half of 256 ``rms =
    sqrt(sum r^2 / 256)`` (16 lanes of 16, a tree), ``u = r * (1/rms)``; a norm <= 1e-10 gives
    ``u = 0``; index = the count of :data:`TQ4_BOUNDARIES` below ``u`` (``u > b``); bytes: byte
    ``i`` = ``index[2i] | index[2i+1] << 4``, then the float32 norm(s)."""
    arr = np.asarray(x)
    if arr.dtype not in (np.float32, np.float16) and arr.dtype.name != "bfloat16":
        raise TypeError(f"x: dtype must be float32, float16 or bfloat16, got {arr.dtype}")
    x32 = arr.astype(np.float32)
    row_bytes = quant_row_bytes(format, x32.shape[-1])
    if not np.isfinite(x32).all() or (np.abs(x32) > _LARGEST[format]).any():
        raise ValueError(f"x: every value must be finite with |x| <= {_LARGEST[format]:.0f} for {format}")
    if format == "tq4":
        return np.ascontiguousarray(_tq4_quantize(x32))
    blocks = x32.reshape(x32.shape[:-1] + (-1, _QK))  # [..., nb, 32]
    if format == "q8_0":
        d = (np.abs(blocks).max(axis=-1) / np.float32(127)).astype(np.float32)
        v = (blocks * _inverse(d)[..., None]).astype(np.float32).astype(np.float64)  # exact widening
        q = (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int8)  # half away from zero (exact in float64)
        body = q.view(np.uint8)
    else:
        mag = np.abs(blocks)
        first = np.argmax(mag, axis=-1)  # argmax: the first of equal maxima
        m = np.take_along_axis(blocks, first[..., None], axis=-1)[..., 0]
        # A block of zeros keeps m = +0 (the scan only replaces m on a strictly larger |x|),
        # whatever its zeros' signs: d = +0 / -8 = -0.
        m = np.where(mag.max(axis=-1) == 0, np.float32(0), m).astype(np.float32)
        d = (m / np.float32(-8)).astype(np.float32)
        t = (blocks * _inverse(d)[..., None]).astype(np.float32)
        t = (t + np.float32(8.5)).astype(np.float32)
        q = np.minimum(np.trunc(t), 15).astype(np.uint8)  # t is in [0, 17): trunc is the C cast
        body = (q[..., : _QK // 2] | (q[..., _QK // 2:] << 4)).astype(np.uint8)
    out = np.concatenate([_scale_bytes(d), body], axis=-1)  # [..., nb, block bytes]
    return np.ascontiguousarray(out.reshape(x32.shape[:-1] + (row_bytes,)))


def dequantize_kv(blocks: npt.ArrayLike, format: str, head_dim: int) -> np.ndarray:
    """The values of ggml blocks ``[..., bytes_per_row]`` (uint8) as float32 ``[..., head_dim]``:
    q8_0 ``q * d``, q4_0 ``(nibble - 8) * d`` (low nibble of byte ``j``: element ``j``, high
    nibble: element ``j + 16``), ``d`` the block's float16 scale; each product is exact in
    float32 (computed in float64 here, then narrowed without rounding). tq4: the rotated values
    (:func:`tq4_rotated_values`) turned back by :func:`tq4_unrotate` (float32, rounded)."""
    b = np.asarray(blocks)
    if b.dtype != np.uint8:
        raise TypeError(f"blocks: dtype must be uint8, got {b.dtype}")
    row_bytes = quant_row_bytes(format, head_dim)
    if b.shape[-1] != row_bytes:
        raise ValueError(f"blocks: the last axis must be {row_bytes} bytes, got {b.shape[-1]}")
    if format == "tq4":
        return tq4_unrotate(tq4_rotated_values(b, head_dim))
    per = b.reshape(b.shape[:-1] + (-1, _BLOCK_BYTES[format]))
    d = np.ascontiguousarray(per[..., :2]).view("<f2")[..., 0].astype(np.float64)
    if format == "q8_0":
        q = per[..., 2:].view(np.int8).astype(np.float64)
    else:
        nibbles = per[..., 2:].astype(np.int64)
        q = (np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1) - 8).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # an inf or NaN scale gives inf or NaN, as in fattn
        values = q * d[..., None]
    return values.astype(np.float32).reshape(b.shape[:-1] + (head_dim,))
