"""Argument handling shared by the public kernels: what needs Python to check.

The compiled core validates shapes, sizes and values itself (and names the
argument in its messages); this module turns what a caller hands us into
arrays the core can view without copying, and rejects what is not an array.
"""
from __future__ import annotations

import operator
from typing import Any, Optional

import ml_dtypes
import numpy as np

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
FLOAT16 = np.dtype(np.float16)
FLOAT32 = np.dtype(np.float32)
KERNEL_DTYPES = (FLOAT32, FLOAT16, BFLOAT16)
LAYOUTS = ("bhld", "blhd")


def dtype_names(dtypes) -> str:
    return ", ".join(str(d) for d in dtypes)


def as_array(x: Any, name: str) -> np.ndarray:
    """`x` as an ndarray without copying; TypeError for anything that is not array data."""
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name}: expected a numpy.ndarray, got {type(x).__name__}")


def require_dtype(a: np.ndarray, name: str, allowed=KERNEL_DTYPES) -> np.dtype:
    if a.dtype not in allowed:
        raise TypeError(f"{name}: dtype must be one of {dtype_names(allowed)}, got {a.dtype}")
    return a.dtype


def require_same_dtype(a: np.ndarray, name: str, ref: np.ndarray, ref_name: str) -> None:
    if a.dtype != ref.dtype:
        raise TypeError(f"{name}: dtype must match {ref_name} ({ref.dtype}), got {a.dtype}")


def require_ndim(a: np.ndarray, name: str, ndim: int, axes: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array {axes}, got shape {a.shape}")


def head_dim_contiguous(a: np.ndarray) -> np.ndarray:
    """The core needs the last axis contiguous and every stride a whole number
    of elements; anything else is copied once here (documented)."""
    item = a.itemsize
    if a.shape[-1] > 1 and a.strides[-1] != item or any(s % item for s in a.strides):
        return np.ascontiguousarray(a)
    return a


def to_bhld(a: np.ndarray, layout: str) -> np.ndarray:
    """A [B, L, H, D] array viewed (not copied) as [B, H, L, D]."""
    return a.transpose(0, 2, 1, 3) if layout == "blhd" else a


def check_layout(layout: Any) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout: must be one of {LAYOUTS}, got {layout!r}")
    return layout


def optional_scale(scale: Any) -> Optional[float]:
    if scale is None:
        return None
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"scale: expected a real number or None, got {type(scale).__name__}")
    value = float(scale)
    if not np.isfinite(value):
        raise ValueError(f"scale: must be finite, got {value}")
    return value


def integer(x: Any, name: str) -> int:
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an integer, got bool")
    try:
        return operator.index(x)
    except TypeError:
        raise TypeError(f"{name}: expected an integer, got {type(x).__name__}") from None


def boolean(x: Any, name: str) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(x).__name__}")
    return bool(x)
