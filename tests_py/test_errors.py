"""Bad calls: the right exception type and a message naming the argument."""
import numpy as np
import pytest

import fattn
from helpers import BF16, F16, F32


def arrays(q=(1, 4, 3, 8), kv=(1, 2, 5, 8), dtype=F32, k_dtype=None, v_dtype=None):
    q_ = np.ones(q, dtype=dtype)
    k_ = np.ones(kv, dtype=k_dtype or dtype)
    v_ = np.ones(kv, dtype=v_dtype or dtype)
    return q_, k_, v_


SDPA_BAD_CALLS = [
    # (id, args, kwargs, exception, message fragment)
    ("q zero batch", arrays(q=(0, 4, 3, 8)), {}, ValueError, "q: every extent must be > 0, got B = 0"),
    ("q zero heads", arrays(q=(1, 0, 3, 8)), {}, ValueError, "q: every extent must be > 0, got H = 0"),
    ("q zero length", arrays(q=(1, 4, 0, 8)), {}, ValueError, "q: every extent must be > 0, got L = 0"),
    ("q zero head dim", arrays(q=(1, 4, 3, 0), kv=(1, 2, 5, 0)), {}, ValueError, "q: every extent must be > 0"),
    ("k zero capacity", arrays(kv=(1, 2, 0, 8)), {}, ValueError, "k: every extent must be > 0, got L = 0"),
    ("H not divisible by H_kv", arrays(q=(1, 6, 3, 8), kv=(1, 4, 5, 8)), {}, ValueError,
     "H (6) must be divisible by the number of K/V heads H_kv (4)"),
    ("mismatched D", arrays(q=(1, 4, 3, 8), kv=(1, 2, 5, 16)), {}, ValueError,
     "k: head dim D (q.shape[3]) must be 8, got 16"),
    ("mismatched batch", arrays(q=(2, 4, 3, 8), kv=(1, 2, 5, 8)), {}, ValueError,
     "k: batch size B (q.shape[0]) must be 2, got 1"),
    ("v shape differs from k", (np.ones((1, 4, 3, 8), F32), np.ones((1, 2, 5, 8), F32), np.ones((1, 2, 4, 8), F32)),
     {}, ValueError, "v: shape must equal k's"),
    ("k dtype differs", arrays(k_dtype=BF16), {}, TypeError, "k: dtype must match q (float32), got bfloat16"),
    ("v dtype differs", arrays(dtype=BF16, v_dtype=F16), {}, TypeError, "v: dtype must match q (bfloat16), got float16"),
    ("unsupported dtype", arrays(dtype=np.float64), {}, TypeError, "q: dtype must be one of"),
    ("integer arrays", arrays(dtype=np.int32), {}, TypeError, "q: dtype must be one of"),
    ("kv_seq_len > capacity", arrays(), {"kv_seq_len": 6}, ValueError,
     "kv_seq_len: must be <= the K/V capacity (k.shape[2] = 5), got 6"),
    ("kv_seq_len zero", arrays(), {"kv_seq_len": 0}, ValueError, "kv_seq_len: must be >= 1, got 0"),
    ("kv_seq_len negative", arrays(), {"kv_seq_len": -1}, ValueError, "kv_seq_len: must be >= 1, got -1"),
    ("kv_seq_len float", arrays(), {"kv_seq_len": 2.0}, TypeError, "kv_seq_len: expected an integer"),
    ("q 3-D", (np.ones((4, 3, 8), F32),) + arrays()[1:], {}, ValueError, "q: expected a 4-D array"),
    ("k 5-D", (arrays()[0], np.ones((1, 1, 2, 5, 8), F32), arrays()[2]), {}, ValueError, "k: expected a 4-D array"),
    ("q is a list", ([[[[1.0]]]],) + arrays(q=(1, 1, 1, 1), kv=(1, 1, 1, 1))[1:], {}, TypeError,
     "q: expected a numpy.ndarray, got list"),
    ("v is None", arrays()[:2] + (None,), {}, TypeError, "v: expected a numpy.ndarray, got NoneType"),
    ("scale nan", arrays(), {"scale": float("nan")}, ValueError, "scale: must be finite"),
    ("scale inf", arrays(), {"scale": float("inf")}, ValueError, "scale: must be finite"),
    ("scale string", arrays(), {"scale": "0.1"}, TypeError, "scale: expected a real number"),
    ("causal string", arrays(), {"causal": "yes"}, TypeError, "causal: expected a bool"),
]


@pytest.mark.parametrize("args, kwargs, exc, fragment", [c[1:] for c in SDPA_BAD_CALLS],
                         ids=[c[0] for c in SDPA_BAD_CALLS])
def test_sdpa_bad_call(args, kwargs, exc, fragment):
    with pytest.raises(exc) as info:
        fattn.sdpa(*args, **kwargs)
    assert fragment in str(info.value)
