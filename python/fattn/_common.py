"""Argument handling shared by the public functions: only what is Python's.

Turning what a caller hands us (NumPy arrays, DLPack and buffer-protocol
objects) into arrays over the same memory, and Python-typed scalar arguments
(a bool, an integer, a real number) into Python values, each with a TypeError
naming the argument. Every rule about shapes, sizes and values is the
compiled core's: its plan checks a call once, before any output is
allocated, and names the argument in its messages (docs/architecture.md).
"""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Tuple, Union, cast

if TYPE_CHECKING:
    from typing import Protocol

import ml_dtypes
import numpy as np

from . import _core

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
FLOAT16 = np.dtype(np.float16)
FLOAT32 = np.dtype(np.float32)
KERNEL_DTYPES = (FLOAT32, FLOAT16, BFLOAT16)

# What a public function accepts as an array argument: a numpy array, or any object
# exposing __dlpack__ or the buffer protocol (checked at run time by as_array). For type
# checkers: ndarray, anything with a __dlpack__ callable without arguments (torch.Tensor,
# JAX arrays, ...) and the standard buffer types (the buffer protocol itself has no static
# type before Python 3.12).
if TYPE_CHECKING:
    import array

    class SupportsDLPack(Protocol):
        def __dlpack__(self) -> Any: ...

    ArrayLike = Union[np.ndarray, SupportsDLPack, memoryview, bytes, bytearray, "array.array[Any]"]
else:
    ArrayLike = Any


def dtype_names(dtypes: Iterable[np.dtype]) -> str:
    return ", ".join(str(d) for d in dtypes)


ARRAY_KINDS = "accepted: numpy.ndarray, objects with __dlpack__ (e.g. a CPU torch.Tensor) or the buffer protocol"


def as_array(x: Any, name: str) -> np.ndarray:
    """`x` as an ndarray over the same memory, never a copy.

    Accepted: a numpy.ndarray; anything with ``__dlpack__`` (a CPU torch.Tensor in
    float32, float16 or bfloat16, ...), read through its DLPack capsule (bfloat16 as an
    ``ml_dtypes.bfloat16`` view, which numpy's own importer cannot make); anything
    exposing the buffer protocol (memoryview, array.array, bytearray, ...). TypeError
    naming the argument for everything else (lists, scalars, None, ...).
    """
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (np.generic, str, bytes, int, float, complex, bool)) or x is None:
        raise TypeError(f"{name}: expected an array, got {type(x).__name__} ({ARRAY_KINDS})")
    if hasattr(type(x), "__dlpack__"):
        try:
            capsule = x.__dlpack__()
        except Exception as e:  # e.g. a tensor that requires grad, or on another device
            raise TypeError(f"{name}: could not be read through __dlpack__ ({type(e).__name__}: {e})") from None
        return _core.dlpack_view(capsule, name)
    try:
        view = memoryview(x)
    except TypeError:
        raise TypeError(f"{name}: expected an array, got {type(x).__name__} ({ARRAY_KINDS})") from None
    try:
        return np.asarray(view)
    except (TypeError, ValueError, NotImplementedError) as e:
        raise TypeError(f"{name}: buffer of format {view.format!r} has no numpy dtype ({e})") from None


def require_dtype(a: np.ndarray, name: str, allowed: Tuple[np.dtype, ...] = KERNEL_DTYPES) -> np.dtype:
    if a.dtype not in allowed:
        raise TypeError(f"{name}: dtype must be one of {dtype_names(allowed)}, got {a.dtype}")
    return a.dtype


def head_dim_contiguous(a: np.ndarray) -> np.ndarray:
    """The core needs the last axis contiguous, every stride a whole number of
    elements and the data aligned to the element size; anything else is copied
    once here (documented)."""
    item = a.itemsize
    if (a.shape[-1] > 1 and a.strides[-1] != item) or any(s % item for s in a.strides) or not a.flags.aligned:
        return np.array(a, order="C", copy=True)
    return a


def prepare_out(out: Any, shape: Tuple[int, ...], dtype: np.dtype, inputs: Sequence[Tuple[str, np.ndarray]]
                ) -> Tuple[np.ndarray, np.ndarray]:
    """A caller's ``out=``: checked (TypeError for a wrong dtype; ValueError for a wrong shape,
    a read-only array, an array that overlaps itself or an input). Returns (out, target):
    the array to return and the one the core writes; they differ (a fresh array, copied into
    ``out`` afterwards) when ``out`` is misaligned or its last axis is not contiguous."""
    a = as_array(out, "out")
    if a.dtype != dtype:
        raise TypeError(f"out: dtype must be {dtype}, got {a.dtype}")
    if a.shape != tuple(shape):
        raise ValueError(f"out: shape must be {tuple(shape)}, got {a.shape}")
    if not a.flags.writeable:
        raise ValueError("out: must be writable, got a read-only array")
    if any(st == 0 and n > 1 for st, n in zip(a.strides, a.shape)):
        raise ValueError(f"out: must not overlap itself (a stride is 0), got strides {a.strides}")
    for name, x in inputs:
        if np.may_share_memory(a, x):
            raise ValueError(f"out: must not overlap the input {name}")
    return a, head_dim_contiguous(a)


def finish_out(out: Any, result: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Copies ``target`` into ``result`` when the core wrote a temporary; returns the caller's
    ``out`` object itself (a numpy array, a torch tensor, ...), or ``result`` without one. (Typed
    as an ndarray, the common case: the kernels' signatures keep one return type.)"""
    if target is not result:
        np.copyto(result, target)
    return result if out is None else cast(np.ndarray, out)


def optional_scale(scale: Any) -> Optional[float]:
    if scale is None:
        return None
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"scale: expected a real number or None, got {type(scale).__name__}")
    return float(scale)  # finite: the core's rule


def real(x: Any, name: str) -> float:
    """A real number (not a bool) as a Python float; TypeError naming the argument otherwise."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a real number, got {type(x).__name__}")
    return float(x)


_INT64 = 2 ** 63


def integer(x: Any, name: str) -> int:
    if type(x) is int and -_INT64 <= x < _INT64:  # the common case, first (small calls pay for every check)
        return x
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an integer, got bool")
    try:
        value = operator.index(x)
    except TypeError:
        raise TypeError(f"{name}: expected an integer, got {type(x).__name__}") from None
    if not -_INT64 <= value < _INT64:
        raise ValueError(f"{name}: {value} is out of the 64-bit range")
    return value


CAUSAL_ALIGNMENTS = ("top_left", "bottom_right")


def causal_arg(x: Any) -> Tuple[bool, Optional[str]]:
    """``causal`` as (on, alignment): a bool keeps the kernel's own alignment (None), or a named
    one, "top_left" (query i sees keys 0..i) or "bottom_right" (the last query sees the last key)."""
    if x is True or x is False:
        return x, None
    if isinstance(x, str):
        if x in CAUSAL_ALIGNMENTS:
            return True, x
        raise TypeError(f"causal: expected a bool or one of {CAUSAL_ALIGNMENTS}, got {x!r}")
    return boolean(x, "causal"), None


def boolean(x: Any, name: str) -> bool:
    if x is True or x is False:
        return x
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(x).__name__}")
    return bool(x)
