from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import numpy as np

from . import _core
from ._common import (BFLOAT16, FLOAT16, FLOAT32, ArrayLike, as_array, boolean, check_attention_shapes, check_layout,
                      finish_out, head_dim_contiguous, integer, optional_scale, prepare_out, require_dtype,
                      require_ndim, require_same_dtype, to_bhld)

_KERNELS = ("auto", "candle", "llamacpp")
_MASK_DTYPES = (np.dtype(bool), FLOAT32, FLOAT16, BFLOAT16)


def _kernel(kernel: Any) -> str:
    if kernel not in _KERNELS:
        raise ValueError(f"kernel: must be one of {_KERNELS}, got {kernel!r}")
    return "candle" if kernel == "auto" else kernel


def _optional_tile(x: Any, name: str) -> Optional[int]:
    return None if x is None else integer(x, name)


def _broadcast_mask(mask: Any, target: Tuple[int, int, int, int]) -> np.ndarray:
    """The mask as a 4-D view over [B, H, Lq, Lk] (stride 0 where it broadcasts; no copy)."""
    mask = as_array(mask, "mask")
    if mask.dtype not in _MASK_DTYPES:
        raise TypeError(f"mask: dtype must be bool (True = attend) or an additive float32, float16 or bfloat16, "
                        f"got {mask.dtype}")
    if not 2 <= mask.ndim <= 4:
        raise ValueError(f"mask: expected [Lq, Lk], [B, H, Lq, Lk] or a shape that broadcasts to "
                         f"{list(target)}, got shape {mask.shape}")
    try:
        view = np.broadcast_to(mask, target)
    except ValueError:
        raise ValueError(f"mask: shape {mask.shape} does not broadcast to [B, H, Lq, Lk] = {list(target)}") from None
    if any(s % view.itemsize for s in view.strides) or not view.flags.aligned:
        view = np.broadcast_to(np.array(mask, order="C", copy=True), target)
    return view


def flash_attn_prefill(q: ArrayLike, k: ArrayLike, v: ArrayLike, mask: Optional[ArrayLike] = None, *,
                       causal: bool = False, scale: Optional[float] = None, layout: str = "bhld",
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

    causal: top-left aligned as in the seed (query i sees keys 0..i), combinable with a
    mask; tiles wholly above a query block's diagonal are not visited.

    kernel: ``"auto"`` = ``"candle"`` (candle/MLX-derived arithmetic: Q pre-scaled by
    ``scale*log2(e)`` rounded to the I/O type, exp2, ``log2(e)*mask``, rescale per K tile,
    a true divide) for every head dim, with the seed geometry (BQ, BK) = (32, 16) for
    D <= 256 and (8, 8) above; ``"llamacpp"`` (D = 512 only; unscaled Q, f32 scale
    after the product, mask through float16, natural exp, per-64-key rescale, reciprocal
    multiply; ``nsg`` 4 or 8 gives identical results). ``q_tile``/``k_tile`` override the
    candle geometry (k_tile changes the rescale points, hence the rounding).

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
    q, k, v = as_array(q, "q"), as_array(k, "k"), as_array(v, "v")
    layout = check_layout(layout)
    axes = "[B, H, L, D]" if layout == "bhld" else "[B, L, H, D]"
    for name, a in (("q", q), ("k", k), ("v", v)):
        require_ndim(a, name, 4, axes)
    require_dtype(q, "q")
    require_same_dtype(k, "k", q, "q")
    require_same_dtype(v, "v", q, "q")
    causal = boolean(causal, "causal")
    return_lse = boolean(return_lse, "return_lse")
    verify_blk = boolean(verify_blk, "verify_blk")
    scale = optional_scale(scale)
    kernel = _kernel(kernel)
    nsg = integer(nsg, "nsg")
    if nsg not in (4, 8):
        raise ValueError(f"nsg: must be 4 or 8, got {nsg}")
    q_tile, k_tile = _optional_tile(q_tile, "q_tile"), _optional_tile(k_tile, "k_tile")

    # Everything is checked before any output is allocated (an invalid call never asks for memory).
    qb, kb, vb = (to_bhld(a, layout) for a in (q, k, v))
    check_attention_shapes(qb, kb, vb, ("q", "k", "v"), "index")
    d = qb.shape[3]
    if kernel == "llamacpp" and d != 512:
        raise ValueError(f"q: head dim D must be 512 for kernel='llamacpp', got {d}")
    if d > 4096:
        raise ValueError(f"q: head dim D must be <= 4096, got {d}")
    bq, bk = _core.prefill_geometry(kernel, d, q_tile, k_tile)
    lq, lk = qb.shape[2], kb.shape[2]
    target = (qb.shape[0], qb.shape[1], lq, lk)
    mask4 = None if mask is None else _broadcast_mask(mask, target)
    blk_arr = None
    if blk is not None:
        blk_arr = as_array(blk, "blk")
        if blk_arr.dtype != np.uint8:
            raise TypeError(f"blk: dtype must be uint8, got {blk_arr.dtype}")
        if blk_arr.ndim != 2:
            raise ValueError(f"blk: expected a 2-D array [ceil(Lq/BQ), ceil(Lk/BK)], got shape {blk_arr.shape}")
        if mask4 is None:
            raise ValueError("blk: a tile-skip map needs the mask it was built from (mask is None)")
        rows, cols = -(-lq // bq), -(-lk // bk)
        if blk_arr.shape != (rows, cols):
            raise ValueError(f"blk: shape must be [ceil(Lq/{bq}), ceil(Lk/{bk})] = [{rows}, {cols}] for "
                             f"kernel='{kernel}', got [{blk_arr.shape[0]}, {blk_arr.shape[1]}]")
        blk_arr = np.ascontiguousarray(blk_arr)
    if out is None:
        result = dest = np.empty(q.shape, dtype=q.dtype)
    else:
        inputs = [("q", q), ("k", k), ("v", v)] + ([] if mask4 is None else [("mask", mask4)])
        result, dest = prepare_out(out, q.shape, q.dtype, inputs)
    lse = np.empty(qb.shape[:3], dtype=np.float32) if return_lse else None
    qh, kh, vh = (head_dim_contiguous(a) for a in (qb, kb, vb))
    _core.flash_attn_prefill(qh, kh, vh, to_bhld(dest, layout), mask4, blk_arr,
                             None if lse is None else lse[..., None], causal, scale, kernel, nsg, q_tile, k_tile,
                             verify_blk)
    returned = finish_out(out, result, dest)
    return (returned, lse) if lse is not None else returned


def prefill_geometry(head_dim: int, *, kernel: str = "auto", q_tile: Optional[int] = None,
                     k_tile: Optional[int] = None) -> Tuple[int, int]:
    """The (BQ, BK) tile geometry ``flash_attn_prefill`` uses for this head dim (>= 1) and kernel
    (default ``"auto"``), or the ``q_tile``/``k_tile`` overrides (docs/numerics.md, "Geometry")."""
    d = integer(head_dim, "head_dim")
    if d < 1:
        raise ValueError(f"head_dim: must be >= 1, got {d}")
    bq, bk = _core.prefill_geometry(_kernel(kernel), d, _optional_tile(q_tile, "q_tile"),
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
    mask = as_array(mask, "mask")
    kernel = _kernel(kernel)
    if head_dim is None and (q_tile is None or k_tile is None):
        if kernel == "llamacpp":
            head_dim = 512
        else:
            raise ValueError("head_dim: needed to choose the tile geometry (or give both q_tile and k_tile)")
    bq, bk = prefill_geometry(512 if head_dim is None else head_dim, kernel=kernel, q_tile=q_tile, k_tile=k_tile)
    if mask.ndim not in (2, 4):
        raise ValueError(f"mask: expected [Lq, Lk] or [B, H, Lq, Lk], got shape {mask.shape}")
    lead = (1, 1) if mask.ndim == 2 else mask.shape[:2]
    mask4 = _broadcast_mask(mask, lead + mask.shape[-2:])
    lq, lk = mask.shape[-2:]
    for n in mask.shape:
        if n <= 0:
            raise ValueError(f"mask: every extent must be > 0, got shape {mask.shape}")
    out = np.empty((-(-lq // bq), -(-lk // bk)), dtype=np.uint8)
    _core.flash_attn_prefill_blk(mask4, kernel, bq, bk, out)
    return out
