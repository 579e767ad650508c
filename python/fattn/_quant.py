"""Quantized KV caches: :func:`quantize_kv` and :class:`QuantizedCache` (docs/numerics.md,
"Quantized caches")."""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from . import _core
from ._common import ArrayLike, as_array, integer

QUANT_FORMATS = ("q8_0", "q4_0", "affine4", "tq4")


def _format(format: Any) -> str:
    if not isinstance(format, str):
        raise TypeError(f"format: expected a str (one of {', '.join(QUANT_FORMATS)}), got {type(format).__name__}")
    return format  # which names exist and are implemented: the core's rule


class QuantizedCache:
    """A quantized KV cache: ``blocks`` (uint8 ``[..., capacity, bytes_per_row]``, one row's
    blocks along the last axis), ``format`` (``"q8_0"``, ``"q4_0"`` or ``"tq4"``) and ``head_dim``
    (D, a multiple of 32; for tq4 a power of two from 32 to 512).

    Made by :func:`quantize_kv`, or by :meth:`from_blocks` around bytes made elsewhere. ``blocks``
    is the array itself, not a copy: write rows into it in place
    (``c.blocks[..., p, :] = fattn.quantize_kv(row, c.format).blocks[..., 0, :]``). The decode
    kernel reads exactly ``blocks``, ``format`` and ``head_dim``.

    Layouts (little-endian, 32 elements per block): q8_0 34 bytes per block, the float16 scale
    ``d`` then 32 int8 ``q`` (element = ``q * d``); q4_0 18 bytes, ``d`` then 16 bytes whose low
    nibble holds element ``j`` and high nibble element ``j + 16`` (element = ``(nibble - 8) * d``);
    tq4 (mlx-native's TurboQuant rows) one row of ``D / 2`` bytes of 4-bit codes of the
    Hadamard-rotated row (code ``2i`` in the low nibble of byte ``i``), then its float32 norm
    (``D = 512``: the two halves' RMS), ``D / 2 + 4`` or ``+ 8`` bytes (docs/numerics.md §9).
    """

    __slots__ = ("_blocks", "_format", "_head_dim")

    def __init__(self, blocks: np.ndarray, format: str, head_dim: int) -> None:
        """Not for callers: use :func:`quantize_kv` or :meth:`from_blocks` (which validate)."""
        self._blocks = blocks
        self._format = format
        self._head_dim = head_dim

    @classmethod
    def from_blocks(cls, blocks: ArrayLike, format: str, *, head_dim: int) -> "QuantizedCache":
        """Wraps raw blocks made elsewhere (no copy): ``blocks`` a uint8 array ``[capacity, W]``,
        ``[H, capacity, W]`` or ``[B, H, capacity, W]`` (numpy, or a uint8 torch tensor / DLPack /
        buffer-protocol object) with ``W`` the bytes per row of ``head_dim`` elements in ``format``
        (q8_0: ``34 * head_dim / 32``, q4_0: ``18 * head_dim / 32``, tq4: ``head_dim / 2 + 4``,
        ``+ 8`` for 512), its last axis contiguous; any
        other strides. TypeError for a non-uint8 ``blocks`` or a non-str ``format``/non-int
        ``head_dim``; ValueError (naming ``blocks``, ``format`` or ``head_dim``) for a bad rank,
        width, stride, format or head dim. The bytes themselves are not checked: any byte pattern
        is a block (a scale may be inf or NaN; dequantizing then gives inf or NaN)."""
        arr = as_array(blocks, "blocks")
        fmt = _format(format)
        dim = integer(head_dim, "head_dim")
        _core.check_quant_blocks(arr, fmt, dim)
        return cls(arr, fmt, dim)

    @property
    def blocks(self) -> np.ndarray:
        """The raw blocks, uint8 ``[..., capacity, bytes_per_row]`` (writable when made by
        :func:`quantize_kv`)."""
        return self._blocks

    @property
    def format(self) -> str:
        """``"q8_0"``, ``"q4_0"`` or ``"tq4"``."""
        return self._format

    @property
    def head_dim(self) -> int:
        """D, the elements per row (a multiple of 32)."""
        return self._head_dim

    @property
    def shape(self) -> Tuple[int, ...]:
        """The logical shape ``[..., capacity, head_dim]`` (the quantized array's)."""
        return tuple(self._blocks.shape[:-1]) + (self._head_dim,)

    @property
    def bytes_per_row(self) -> int:
        """Bytes of one row's blocks: ``blocks.shape[-1]``."""
        return int(self._blocks.shape[-1])

    def dequantize(self) -> np.ndarray:
        """The float32 values ``[..., capacity, head_dim]``: q8_0/q4_0 each element ``q * d`` with
        the block's float16 scale ``d``, exact in float32 (no rounding); tq4 the rotated centroids
        ``centroid[code] * norm / sqrt(D)`` rotated back (rounded in float32)."""
        return _core.dequantize_kv(self._blocks, self._format, self._head_dim)

    def __repr__(self) -> str:
        return f"QuantizedCache(format={self._format!r}, shape={self.shape}, bytes_per_row={self.bytes_per_row})"


def quantize_kv(x: ArrayLike, format: str) -> QuantizedCache:
    """Quantizes ``x`` ``[capacity, D]``, ``[H, capacity, D]`` or ``[B, H, capacity, D]`` (float32,
    float16 or bfloat16; numpy, CPU torch tensor, DLPack or buffer protocol; any strides, a
    non-contiguous last axis is copied first) into a :class:`QuantizedCache` of ``format``
    ``"q8_0"``, ``"q4_0"`` or ``"tq4"`` (``"affine4"`` is reserved: ValueError, not implemented
    yet). D must be a multiple of 32 (the block size); for tq4 a power of two from 32 to 512.
    tq4 follows mlx-native's TurboQuant quantizer step by step (docs/numerics.md §9: sign flips
    for D = 256/512, the normalized Walsh-Hadamard transform, the L2 norm (D = 512: each half's
    RMS), the nearest of 16 Lloyd-Max centroids of N(0, 1)); ``|x| <= 2^50``.

    Each block of 32 elements along D follows ggml's reference quantizer bit for bit
    (docs/numerics.md, "Quantized caches"): q8_0 ``d = max|x| / 127``, ``q = round(x / d)`` half
    away from zero; q4_0 ``d = m / -8`` with ``m`` the first element of largest magnitude,
    ``q = min(15, trunc(x / d + 8.5))``; both in float32 with ``1/d`` computed once, ``d`` stored
    as float16 (round to nearest even).

    Errors: TypeError for an array of another dtype or a non-str ``format``; ValueError for a
    rank other than 2 to 4, a zero extent, D not a multiple of 32 (naming ``x``), an unknown or
    unimplemented ``format``, and for a non-finite value or one too large for the block's
    float16 scale (``|x| > 65504 * 127`` for q8_0, ``65504 * 8`` for q4_0; naming ``x`` and the
    position): checked before anything is written."""
    arr = as_array(x, "x")
    fmt = _format(format)
    blocks = _core.quantize_kv(arr, fmt)
    return QuantizedCache(blocks, fmt, int(arr.shape[-1]))
