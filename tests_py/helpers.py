"""Tolerances and comparisons the tests share; docs/numerics.md derives them."""
import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
DTYPES = [F32, F16, BF16]

# Mantissa bits and smallest normal exponent of each type.
_FORMAT = {F32: (23, -126), F16: (10, -14), BF16: (7, -126)}


def ulp(x, dtype):
    """Spacing of `dtype`'s numbers at |x| (float64 array)."""
    mant, min_exp = _FORMAT[np.dtype(dtype)]
    x = np.abs(np.asarray(x, dtype=np.float64))
    exp = np.floor(np.log2(np.where(x > 0, x, 1.0)))
    return np.exp2(np.maximum(exp, min_exp) - mant)


def f32_budget(v):
    """The f32 error allowance of an attention output: 1e-5 of max|V| (each
    output is a convex combination of V rows, so max|V| is its scale)."""
    return 1e-5 * max(1e-30, float(np.max(np.abs(np.asarray(v, dtype=np.float64)))))


def exact_tolerance(dtype, exact, v):
    """|fattn - exact| allowed elementwise: f32 -> the f32 budget; bf16/f16 ->
    one ulp of the output type at the exact value (half from the final
    rounding, the rest from f32 arithmetic that can cross a rounding
    boundary) plus the f32 budget."""
    dtype = np.dtype(dtype)
    if dtype == F32:
        return np.full(np.shape(exact), f32_budget(v))
    return ulp(exact, dtype) + f32_budget(v)


def random_inputs(rng, dtype, *shapes, scale=1.0):
    return [(rng.standard_normal(s) * scale).astype(dtype) for s in shapes]


def as64(x):
    return np.asarray(x).astype(np.float64)
