"""Tolerances and comparisons the tests share. The bounds are fattn.bounds (the public module
researchers use), derived in docs/numerics.md; the names here are the tests' own."""
import ml_dtypes
import numpy as np

from fattn.bounds import (decode_bound as decode_exact_bound, prefill_bound as prefill_exact_bound,  # noqa: F401
                          sdpa_tolerance as exact_tolerance, ulp, within as within_exact_bound)

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
DTYPES = [F32, F16, BF16]


def f32_budget(v):
    """The f32 error allowance of an attention output: 1e-5 of max|V| (each
    output is a convex combination of V rows, so max|V| is its scale)."""
    return 1e-5 * max(1e-30, float(np.max(np.abs(np.asarray(v, dtype=np.float64)))))


def random_inputs(rng, dtype, *shapes, scale=1.0):
    return [(rng.standard_normal(s) * scale).astype(dtype) for s in shapes]


def bits(x):
    """x's bytes, for comparing results bit for bit (NaN payloads and signed zeros included)."""
    return np.ascontiguousarray(x).view(np.uint8)


def as64(x):
    return np.asarray(x).astype(np.float64)


def same_bits(a, b):
    """Same shape and the same bytes: bit-for-bit equality (NaN payloads and signed zeros included)."""
    return a.shape == b.shape and a.tobytes() == b.tobytes()
