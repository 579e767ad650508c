from __future__ import annotations

from typing import Any, Optional, Tuple, Union, cast

import numpy as np

from . import _core
from ._common import ArrayLike, as_array, boolean, causal_arg, integer, optional_scale, real


_Result = Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]


def _optional_tile(x: Any, name: str) -> Optional[int]:
    return None if x is None else integer(x, name)


def flash_attn_prefill(q: ArrayLike, k: ArrayLike, v: ArrayLike, mask: Optional[ArrayLike] = None, *,
                       causal: Union[bool, str] = False, scale: Optional[float] = None, softcap: float = 0.0,
                       window: Optional[int] = None, sinks: Optional[ArrayLike] = None, q_offset: int = 0,
                       layout: str = "bhld",
                       blk: Optional[ArrayLike] = None, kernel: str = "auto", nsg: int = 8,
                       return_lse: bool = False, q_tile: Optional[int] = None, k_tile: Optional[int] = None,
                       out: Optional[ArrayLike] = None, verify_blk: bool = True
                       ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Tiled flash-attention prefill (mlx-native's ``flash_attn_prefill`` family, seeds 000 and 001).

    Shapes: ``layout="bhld"``: q ``[B, H, Lq, D]``, k and v ``[B, H_kv, Lk, D]``;
    ``layout="blhd"``: q ``[B, Lq, H, D]``, k and v ``[B, Lk, H_kv, D]``. ``H % H_kv == 0``
    (query head h reads K/V head ``h // (H // H_kv)``). Any strides.

    Dtypes: bfloat16 (``ml_dtypes.bfloat16``), float16 or float32, one for q, k, v; the
    output has q's dtype, shape and layout.

    mask: bool (True = attend) or additive (float32, float16 or bfloat16; 0 = attend,
    ``-inf`` = blocked, any finite value a bias), shaped ``[Lq, Lk]``, ``[B, H, Lq, Lk]`` or
    anything that broadcasts to the latter (read through stride-0 views, never copied).
    An additive mask is used at its own precision (the GPU reads it in the I/O type).

    causal: ``True`` is top-left aligned as in the seed (query i sees keys 0..i), also
    spelled ``"top_left"``; ``"bottom_right"`` puts the last query on the last key (query i
    sees keys ``0..i + Lk - Lq``; a query before the first key sees none and gives 0, LSE
    ``-inf``). Combinable with a mask; tiles wholly above a query block's diagonal are not
    visited.

    kernel: ``"auto"`` = ``"candle"`` (candle/MLX-derived arithmetic: Q pre-scaled by
    ``scale*log2(e)`` rounded to the I/O type, exp2, ``log2(e)*mask``, rescale per K tile,
    a true divide) for every head dim, with the seed geometry (BQ, BK) = (32, 16) for
    D <= 256 and (8, 8) above; ``"llamacpp"`` (D = 512 only; unscaled Q, f32 scale
    after the product, mask through float16, natural exp, per-64-key rescale, reciprocal
    multiply; ``nsg`` 4 or 8 gives identical results). ``q_tile``/``k_tile`` override the
    candle geometry (k_tile changes the rescale points, hence the rounding).

    q_offset: query row i sits at absolute position ``q_offset + i`` (keys at ``0..Lk-1``), for a
    chunk of a longer prompt prefilled against the cache so far: with ``causal=True`` key j is seen
    iff ``j <= q_offset + i`` (``q_offset = Lk - Lq`` is ``"bottom_right"``, which cannot be
    combined with a non-zero offset). Calls in chunks with the matching offsets give the one-shot
    call's bits.

    window: ``W >= 1`` (or None): key j is seen iff ``q_offset + i - W < j <= q_offset + i`` (the
    last W positions, the query's own included; the decode's ``sliding_window`` rule); implies
    causal. Tiles wholly outside a block's window are not visited, and skipping them changes no bit.

    softcap: ``> 0`` replaces each scaled score s by ``softcap * tanh(s / softcap)`` before the
    mask (Gemma 2); 0 = off. It uses fattn's own tanh (docs/numerics.md), in the kernel's units.

    sinks: None or a float32 array ``[H]`` (one per query head): a learned logit in the units of
    the scaled scores that joins the softmax denominator only,
    ``out = sum_j e^{s_j} v_j / (e^{sink} + sum_j e^{s_j})``; ``-inf`` is no sink. The LSE
    (``return_lse``) stays the one over the keys, so results over key ranges merge with
    ``merge_attention(..., sinks=sinks)``. It enters after the last key (as llama.cpp's kernels).

    blk: the uint8 tile-skip map from :func:`flash_attn_prefill_blk` for the same mask,
    kernel and geometry; it never changes a bit of the output. ``verify_blk=True`` (the
    default) first checks it against the map the mask gives, one pass over the mask (a few
    percent of a call that skips most tiles), and raises ``ValueError`` naming the first tile
    that differs, so a map built from another mask cannot silently skip unblocked keys;
    ``verify_blk=False`` trusts it as the GPU kernel does.

    return_lse: also return the float32 log-sum-exp (natural log) of each row's scores,
    ``[B, H, Lq]``; ``-inf`` for a row that sees no key (whose output is exactly 0).

    out: an array of q's dtype and shape (in the call's layout) to write the output into
    (any strides that do not overlap; misaligned or non-contiguous-D arrays are written
    through a temporary); it is what is returned (with the LSE when ``return_lse``).

    Arrays: numpy arrays, CPU torch tensors (bf16 included) or anything with
    ``__dlpack__`` or the buffer protocol, read in place (docs/numerics.md §2, "Inputs").
    Defaults: no mask, ``causal=False``, ``scale=1/sqrt(D)`` (f32), ``layout="bhld"``,
    ``kernel="auto"``, ``nsg=8``.

    Numerics: docs/numerics.md, "Tiled prefill"; ``fattn.reference.flash_attn_prefill``
    follows the same steps in NumPy. Non-finite q, k, v: docs/numerics.md,
    "Non-finite inputs".
    """
    on, align = causal_arg(causal)  # (a star-argument would make the call build a tuple: slower)
    result = _core.flash_attn_prefill(
        as_array(q, "q"), as_array(k, "k"), as_array(v, "v"), None if mask is None else as_array(mask, "mask"),
        None if blk is None else as_array(blk, "blk"), None if out is None else as_array(out, "out"),
        on, align, optional_scale(scale), layout, kernel, integer(nsg, "nsg"),
        _optional_tile(q_tile, "q_tile"), _optional_tile(k_tile, "k_tile"), boolean(return_lse, "return_lse"),
        boolean(verify_blk, "verify_blk"), real(softcap, "softcap"),
        None if window is None else integer(window, "window"),
        None if sinks is None else as_array(sinks, "sinks"), integer(q_offset, "q_offset"))
    if out is None:
        return cast(_Result, result)  # (a type alias: subscripting typing at each call costs a microsecond)
    return (cast(np.ndarray, out), result[1]) if return_lse else cast(np.ndarray, out)


def flash_attn_varlen(q: ArrayLike, k: ArrayLike, v: ArrayLike, cu_seqlens_q: ArrayLike, cu_seqlens_k: ArrayLike, *,
                      causal: Union[bool, str] = False, scale: Optional[float] = None, softcap: float = 0.0,
                      window: Optional[int] = None, sinks: Optional[ArrayLike] = None, kernel: str = "auto",
                      return_lse: bool = False, out: Optional[ArrayLike] = None
                      ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Prefill of B variable-length sequences packed along the rows, in one call (flash-attention's
    varlen layout).

    Shapes: q ``[total_q, H, D]``, k and v ``[total_k, H_kv, D]``, ``H % H_kv == 0``; any strides.
    Sequence b is rows ``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` of q and
    ``cu_seqlens_k[b]:cu_seqlens_k[b+1]`` of k and v. ``cu_seqlens_q`` and ``cu_seqlens_k``:
    int32 or int64 ``[B + 1]`` (B >= 0), starting at 0, non-decreasing, ending at ``total_q`` and
    ``total_k``; a sequence may be empty on either side (no keys: its rows are 0, LSE ``-inf``).

    Dtypes: bfloat16 (``ml_dtypes.bfloat16``), float16 or float32, one for q, k, v; the output has
    q's dtype and shape ``[total_q, H, D]``.

    Each sequence's rows are bit for bit those of :func:`flash_attn_prefill` on that sequence alone
    (``layout="blhd"``, ``q[None, a:b]``, ...) with the same arguments, on any thread count and
    vector path; the call spreads the (sequence, head, query block) work items of all sequences over
    the threads at once.

    causal: ``True`` (or ``"bottom_right"``) is bottom-right per sequence, as flash-attention's
    varlen: query i of a sequence with Lq queries and Lk keys sees keys ``j <= Lk - Lq + i`` (with
    Lq > Lk the first ``Lq - Lk`` queries see none and give 0, LSE ``-inf``): per sequence it is
    ``flash_attn_prefill(..., causal="bottom_right")``, i.e. ``causal=True, q_offset=Lk - Lq`` when
    Lk >= Lq. ``"top_left"`` aligns query i with key i instead.

    window: ``W >= 1`` (or None): query i sees keys ``Lk - Lq + i - W < j <= Lk - Lq + i`` (the last
    W positions, its own included; counted from the same alignment as causal, bottom-right unless
    ``causal="top_left"``); implies causal.

    softcap, sinks ``[H]`` (float32), scale, kernel (``"auto"`` = ``"candle"``; ``"llamacpp"`` for
    D = 512): as :func:`flash_attn_prefill`.

    return_lse: also return the float32 natural-log log-sum-exp of each row, ``[total_q, H]``.

    out: an array of q's dtype and shape ``[total_q, H, D]`` to write into (any strides that do not
    overlap); it is what is returned (with the LSE when ``return_lse``).

    Bad arguments raise ``ValueError`` (shapes, cu_seqlens values) or ``TypeError`` (dtypes), naming
    the argument, before anything is read. Numerics: docs/numerics.md, "Tiled prefill" (variable
    length).
    """
    on, align = causal_arg(causal)
    result = _core.flash_attn_varlen(
        as_array(q, "q"), as_array(k, "k"), as_array(v, "v"), as_array(cu_seqlens_q, "cu_seqlens_q"),
        as_array(cu_seqlens_k, "cu_seqlens_k"), None if out is None else as_array(out, "out"), on, align,
        optional_scale(scale), real(softcap, "softcap"), None if window is None else integer(window, "window"),
        None if sinks is None else as_array(sinks, "sinks"), kernel, boolean(return_lse, "return_lse"))
    if out is None:
        return cast(_Result, result)
    return (cast(np.ndarray, out), result[1]) if return_lse else cast(np.ndarray, out)


def prefill_geometry(head_dim: int, *, kernel: str = "auto", q_tile: Optional[int] = None,
                     k_tile: Optional[int] = None) -> Tuple[int, int]:
    """The (BQ, BK) tile geometry ``flash_attn_prefill`` uses for this head dim (>= 1) and kernel
    (default ``"auto"``), or the ``q_tile``/``k_tile`` overrides (docs/numerics.md, "Geometry")."""
    bq, bk = _core.prefill_geometry(kernel, integer(head_dim, "head_dim"), _optional_tile(q_tile, "q_tile"),
                                    _optional_tile(k_tile, "k_tile"))
    return bq, bk


def flash_attn_prefill_blk(mask: ArrayLike, *, head_dim: Optional[int] = None, kernel: str = "auto",
                           q_tile: Optional[int] = None, k_tile: Optional[int] = None) -> np.ndarray:
    """The tile-skip map (``blk``) for ``mask``: uint8 ``[ceil(Lq/BQ), ceil(Lk/BK)]``, row-major.

    (BQ, BK) is the geometry ``flash_attn_prefill`` uses for ``head_dim`` and ``kernel``
    (or ``q_tile``/``k_tile`` when given). ``mask`` is ``[Lq, Lk]`` or ``[B, H, Lq, Lk]``
    (or broadcastable), bool or additive. Per tile: 0 = skip it (every cell is blocked as
    the kernel sees it: bool False, or an additive value that is ``-inf`` after the
    kernel's own mask transform); 2 = skip only the mask add (every cell adds exactly
    zero); 1 = full work. A tile that crosses Lk is always 1. A 4-D mask is classified over
    all its batches and heads. Passing the map as ``blk=`` never changes a bit of the output
    (the seed's rule, ``max <= -1e30`` -> skip, could: see docs/numerics.md).
    ``mask`` may be any array object (numpy, CPU torch tensor, DLPack or buffer protocol),
    read in place. Numerics: docs/numerics.md, "Tiled prefill" (the tile-skip map).
    """
    mask_arr = as_array(mask, "mask")
    return _core.flash_attn_prefill_blk(mask_arr, kernel, None if head_dim is None else integer(head_dim, "head_dim"),
                                        _optional_tile(q_tile, "q_tile"), _optional_tile(k_tile, "k_tile"))
