"""fattn: mlx-native's attention kernels on the CPU, and float64 NumPy references to hold them against.

Kernels: :func:`flash_attn_prefill` (tiled prefill) with its tile-skip map
:func:`flash_attn_prefill_blk`, :func:`flash_attn_varlen` (packed variable-length prefill),
:func:`flash_attn_vec` (split-KV decode) with its halves
:func:`flash_attn_vec_partials` / :func:`flash_attn_vec_reduce`, :func:`merge_attention`,
:func:`sdpa` (naive fused SDPA). Quantized KV caches (ggml's q8_0 / q4_0 blocks):
:func:`quantize_kv`, :class:`QuantizedCache`. Threads: :func:`set_num_threads`,
:func:`get_num_threads`. Exact and kernel-faithful references:
:mod:`fattn.reference`. The error bounds the tests assert, evaluated on your data:
:mod:`fattn.bounds`. Numerics of every kernel: docs/numerics.md.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from . import _core, bounds, reference
from numpy.typing import DTypeLike

from ._common import BFLOAT16, FLOAT16, FLOAT32, ArrayLike, as_array
from ._decode import flash_attn_vec, flash_attn_vec_partials, flash_attn_vec_reduce, merge_attention
from ._prefill import flash_attn_prefill, flash_attn_prefill_blk, flash_attn_varlen, prefill_geometry
from ._quant import QuantizedCache, quantize_kv
from ._sdpa import sdpa

__version__: str = _core.__version__

if "ignored" in _core.isa_origin():  # a FATTN_ISA this build or CPU cannot honour
    import warnings
    warnings.warn(f"fattn: {_core.isa_origin()}", RuntimeWarning, stacklevel=2)

__all__ = ["flash_attn_vec", "flash_attn_vec_partials", "flash_attn_vec_reduce", "merge_attention",
           "flash_attn_prefill", "flash_attn_prefill_blk", "flash_attn_varlen", "prefill_geometry", "sdpa", "quantize_kv", "QuantizedCache", "reference", "bounds", "set_num_threads", "get_num_threads", "build_info", "round_to", "available_isas", "set_isa", "get_isa", "__version__"]


def set_num_threads(n: int) -> None:
    """Threads every kernel may use (an int >= 1). Results are bit-identical for any count
    (docs/numerics.md §2, "Threads"); safe to call while other Python threads run kernels."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n: expected an integer, got {type(n).__name__}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """The thread count kernels use (default: the machine's hardware threads; see
    :func:`set_num_threads`)."""
    return _core.get_num_threads()


def build_info() -> Dict[str, Any]:
    """Version, compiler, build type, the CPU and its usable features, the kernel paths, threads:
    a dict with keys "version", "compiler", "build_type", "cpu_features", "cpu" (CPUID's brand
    string), "cpu_family", "cpu_model", "l1d_bytes" (one core's L1 data cache, which sizes the
    prefill's P·V batches), "isa" (the :func:`set_isa` setting), "isa_paths"
    (``{"prefill": path, "decode": path, ...}``: what each family and class runs; under
    ``"auto"`` asking measures the families not yet used), "isa_reason" (why, with the measured
    times), "num_threads". docs/numerics.md §7."""
    return dict(_core.build_info())


def available_isas(include_emulated: bool = False) -> List[str]:
    """The kernel paths this CPU can run: "scalar" (the readable model every other path
    reproduces bit for bit) and, where supported, "avx2", "avx512_256" (AVX-512's 32
    registers on 256-bit vectors), "avx512" and "avx512_bf16" (the AVX-512 path with the
    prefill's bf16 Q·Kᵀ on AVX512_BF16's dot product; docs/numerics.md §7). With
    ``include_emulated``, also "avx512_emulated", "avx512_256_emulated" and
    "avx512_bf16_emulated" where the CPU has AVX2: those paths' code run on AVX2, slow, for
    testing that code on machines without AVX-512 or AVX512_BF16."""
    if not isinstance(include_emulated, bool):
        raise TypeError(f"include_emulated: expected a bool, got {type(include_emulated).__name__}")
    return list(_core.available_isas(include_emulated))


def set_isa(name: str) -> None:
    """Selects the kernel path: ``"auto"`` (the default), or one of :func:`available_isas`
    (``"scalar"``, ``"avx2"``, ``"avx512"``, ``"avx512_bf16"``, or an emulated twin) for every
    kernel family.

    ``"auto"`` runs each family (prefill, decode, sdpa; and as classes of their own prefill
    calls of at most 8 query rows, "prefill_short", and f32 prefill calls, "prefill_f32") on
    the path measured fastest for it on
    this CPU: the native paths are timed once per process on small calls of that family (a few
    milliseconds in all), on its first use. Results do not depend on the path, bit for bit
    (docs/numerics.md §7), so the choice changes speed only. ``FATTN_ISA`` in the environment
    (``"auto"`` or a path name) sets the initial value; :func:`build_info` says what runs and
    why. Process-wide; ValueError for a path this build or CPU cannot run."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    _core.set_isa(name)


def get_isa() -> str:
    """The setting :func:`set_isa` made: ``"auto"`` or a path name (what each family runs under
    ``"auto"``: ``build_info()["isa_paths"]``)."""
    return str(_core.get_isa())


def round_to(x: ArrayLike, dtype: DTypeLike) -> np.ndarray:
    """``x`` (float64, float32, float16 or bfloat16, any shape; numpy array, CPU torch tensor,
    DLPack or buffer-protocol object) rounded to ``dtype`` (float32, float16, bfloat16) with
    fattn's conversion (round to nearest even, NaN kept, overflow to inf): the same rounding the
    kernels do at a store (docs/numerics.md §1). float64 input is rounded once, straight to
    ``dtype`` (not through float32 to nearest, which can round twice). Returns a new array of x's
    shape."""
    arr = as_array(x, "x")
    if arr.dtype not in (np.float64, FLOAT32, FLOAT16, BFLOAT16):
        raise TypeError(f"x: dtype must be one of float64, float32, float16, bfloat16, got {arr.dtype}")
    try:
        target = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype: not a dtype ({e})") from None
    if target not in (FLOAT32, FLOAT16, BFLOAT16):
        raise TypeError(f"dtype: dtype must be one of float32, float16, bfloat16, got {target}")
    if arr.dtype == np.float64:  # overflow to inf is the documented result, not a warning
        with np.errstate(over="ignore"):
            arr = arr.astype(FLOAT32) if target == FLOAT32 else _float64_to_float32_sticky(arr)
    src = np.require(arr, requirements=("C", "A")).reshape(-1)
    dst = np.empty(src.shape, dtype=target)
    _core.convert(src, dst)
    return dst.reshape(arr.shape)


def _float64_to_float32_sticky(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounded to odd: truncated toward zero, and the last bit set when
    anything was dropped. float32 keeps at least two more bits than float16 and bfloat16 (normal
    or subnormal), so rounding this to nearest even gives the float64 value's own correctly
    rounded float16/bfloat16 (Boldo & Melquiond, "Emulation of FMA and correctly rounded sums:
    proved algorithms using rounding to odd", 2008)."""
    with np.errstate(over="ignore", invalid="ignore"):
        t = x.astype(FLOAT32)
        away = np.abs(t.astype(np.float64)) > np.abs(x)  # rounded away from zero (incl. to inf)
        t = np.where(away, np.nextafter(t, FLOAT32.type(0)), t)
        inexact = (t.astype(np.float64) != x) & ~np.isnan(x)
    odd: np.ndarray = (t.view(np.uint32) | inexact.astype(np.uint32)).view(FLOAT32)
    return odd
