"""Bad calls: the right exception type and a message naming the argument."""
import inspect
import re

import numpy as np
import pytest

import fattn
from helpers import BF16, F16, F32


def huge(shape, dtype=F32):
    """A read-only view of `shape` over one row of D elements (zero strides elsewhere): nothing
    big is allocated, however many elements the shape claims."""
    dtype = np.dtype(dtype)
    if shape[-1] > 4096:  # a huge last axis is zero-stride too
        return np.lib.stride_tricks.as_strided(np.ones(1, dtype), shape, (0,) * len(shape), writeable=False)
    base = np.ones(shape[-1], dtype)
    strides = (0,) * (len(shape) - 1) + (dtype.itemsize,)
    return np.lib.stride_tricks.as_strided(base, shape, strides, writeable=False)


def read_only(shape, dtype=F32):
    a = np.zeros(shape, dtype)
    a.flags.writeable = False
    return a


def self_overlapping(shape, dtype=F32):
    return np.lib.stride_tricks.as_strided(np.zeros(shape[-1], dtype), shape,
                                           (0,) * (len(shape) - 1) + (np.dtype(dtype).itemsize,), writeable=True)


BIG = 2 ** 32 + 3  # an extent whose element counts overflow 32 bits


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
     "q: expected an array, got list"),
    ("v is None", arrays()[:2] + (None,), {}, TypeError, "v: expected an array, got NoneType"),
    ("scale nan", arrays(), {"scale": float("nan")}, ValueError, "scale: must be finite"),
    ("scale inf", arrays(), {"scale": float("inf")}, ValueError, "scale: must be finite"),
    ("scale string", arrays(), {"scale": "0.1"}, TypeError, "scale: expected a real number"),
    ("causal string", arrays(), {"causal": "yes"}, TypeError, "causal: expected a bool"),
    # dtypes, ranks, extents
    ("q f16 k f32", arrays(dtype=F16, k_dtype=F32), {}, TypeError, "k: dtype must match q (float16), got float32"),
    ("bool arrays", arrays(dtype=np.bool_), {}, TypeError, "q: dtype must be one of"),
    ("v 3-D", arrays()[:2] + (np.ones((2, 5, 8), F32),), {}, ValueError, "v: expected a 4-D array"),
    ("k 2-D", (arrays()[0], np.ones((5, 8), F32), arrays()[2]), {}, ValueError, "k: expected a 4-D array"),
    ("q 0-D", (np.ones((), F32),) + arrays()[1:], {}, ValueError, "q: expected a 4-D array"),
    ("k zero heads", arrays(kv=(1, 0, 5, 8)), {}, ValueError, "k: every extent must be > 0, got H = 0"),
    ("v length differs", (np.ones((1, 4, 3, 8), F32), np.ones((1, 2, 5, 8), F32), np.ones((1, 2, 6, 8), F32)),
     {}, ValueError, "v: shape must equal k's [1, 2, 5, 8], got [1, 2, 6, 8]"),
    ("v heads differ", (np.ones((1, 4, 3, 8), F32), np.ones((1, 2, 5, 8), F32), np.ones((1, 4, 5, 8), F32)),
     {}, ValueError, "v: shape must equal k's"),
    ("more kv heads than q", arrays(q=(1, 2, 3, 8), kv=(1, 4, 5, 8)), {}, ValueError,
     "H (2) must be divisible by the number of K/V heads H_kv (4)"),
    ("kv_seq_len beyond int64", arrays(), {"kv_seq_len": 2 ** 70}, ValueError, "kv_seq_len: "),
    ("kv_seq_len numpy bool", arrays(), {"kv_seq_len": np.bool_(True)}, TypeError, "kv_seq_len: expected an integer"),
    ("scale -inf", arrays(), {"scale": float("-inf")}, ValueError, "scale: must be finite"),
    ("scale numpy nan", arrays(), {"scale": np.float32("nan")}, ValueError, "scale: must be finite"),
    ("scale complex", arrays(), {"scale": 1j}, TypeError, "scale: expected a real number"),
    # huge (zero-stride) inputs: checked before anything is allocated
    ("huge q, D mismatch", (huge((1, 4, BIG, 8)), np.ones((1, 2, 5, 16), F32), np.ones((1, 2, 5, 16), F32)), {},
     ValueError, "k: head dim D (q.shape[3]) must be 8, got 16"),
    ("huge q, batch mismatch", (huge((BIG, 4, 1, 8)), np.ones((1, 2, 5, 8), F32), np.ones((1, 2, 5, 8), F32)), {},
     ValueError, "k: batch size B (q.shape[0]) must be"),
    ("huge q, H % H_kv", (huge((1, 2 ** 31 + 1, 2, 8)), np.ones((1, 2, 5, 8), F32), np.ones((1, 2, 5, 8), F32)), {},
     ValueError, "must be divisible by the number of K/V heads H_kv (2)"),
    ("huge q, kv_seq_len > capacity", (huge((1, 2, BIG, 8)), np.ones((1, 2, 5, 8), F32), np.ones((1, 2, 5, 8), F32)),
     {"kv_seq_len": 6}, ValueError, "kv_seq_len: must be <= the K/V capacity (k.shape[2] = 5), got 6"),
    ("huge k, kv_seq_len > capacity", (np.ones((1, 2, 3, 8), F32), huge((1, 2, BIG, 8)), huge((1, 2, BIG, 8))),
     {"kv_seq_len": BIG + 1}, ValueError, f"kv_seq_len: must be <= the K/V capacity (k.shape[2] = {BIG})"),
    ("huge q, bad dtype", (huge((1, 2, BIG, 8), np.float64),) + arrays(kv=(1, 2, 5, 8))[1:], {}, TypeError,
     "q: dtype must be one of"),
    # out=
    ("out read-only", arrays(), {"out": read_only((1, 4, 3, 8))}, ValueError, "out: must be writable"),
    ("out wrong dtype", arrays(), {"out": np.zeros((1, 4, 3, 8), F16)}, TypeError,
     "out: dtype must be float32, got float16"),
    ("out wrong shape", arrays(), {"out": np.zeros((1, 4, 3, 9), F32)}, ValueError,
     "out: shape must be (1, 4, 3, 8), got (1, 4, 3, 9)"),
    ("out 3-D", arrays(), {"out": np.zeros((4, 3, 8), F32)}, ValueError, "out: shape must be (1, 4, 3, 8)"),
    ("out overlaps itself", arrays(), {"out": self_overlapping((1, 4, 3, 8))}, ValueError,
     "out: must not overlap itself"),
    ("out is q", (lambda a: (a[0], a[1], a[2]))(arrays(kv=(1, 4, 5, 8))), {"out": None}, None, None),
    ("out list", arrays(), {"out": [0.0] * 8}, TypeError, "out: expected an array, got list"),
    ("out string", arrays(), {"out": "out"}, TypeError, "out: expected an array, got str"),
    # not arrays
    ("k dict", (arrays()[0], {"k": 1}, arrays()[2]), {}, TypeError, "k: expected an array, got dict"),
    ("q float", (1.0,) + arrays()[1:], {}, TypeError, "q: expected an array, got float"),
    ("q numpy scalar", (np.float32(1.0),) + arrays()[1:], {}, TypeError, "q: expected an array, got float32"),
    ("v object", arrays()[:2] + (object(),), {}, TypeError, "v: expected an array, got object"),
    ("q bytearray (1-D uint8)", (bytearray(16),) + arrays()[1:], {}, ValueError, "q: expected a 4-D array"),
    ("q 4-D uint8 buffer", (memoryview(bytearray(96)).cast("B", (1, 4, 3, 8)),) + arrays()[1:], {}, TypeError,
     "q: dtype must be one of"),
    # softcap, window, sinks (issue 19): H = 4 query heads in arrays()
    ("softcap negative", arrays(), {"softcap": -1.0}, ValueError, "softcap: must be finite and >= 0 (0 = off), got -1"),
    ("softcap nan", arrays(), {"softcap": float("nan")}, ValueError, "softcap: must be finite and >= 0"),
    ("softcap inf", arrays(), {"softcap": float("inf")}, ValueError, "softcap: must be finite and >= 0"),
    ("softcap beyond float32", arrays(), {"softcap": 1e300}, ValueError, "softcap: must be finite and >= 0"),
    ("softcap string", arrays(), {"softcap": "30"}, TypeError, "softcap: expected a real number, got str"),
    ("softcap bool", arrays(), {"softcap": True}, TypeError, "softcap: expected a real number, got bool"),
    ("softcap None", arrays(), {"softcap": None}, TypeError, "softcap: expected a real number, got NoneType"),
    ("window zero", arrays(), {"window": 0}, ValueError, "window: must be >= 1 (None = no window), got 0"),
    ("window negative", arrays(), {"window": -3}, ValueError, "window: must be >= 1 (None = no window), got -3"),
    ("window float", arrays(), {"window": 2.0}, TypeError, "window: expected an integer, got float"),
    ("window bool", arrays(), {"window": True}, TypeError, "window: expected an integer, got bool"),
    ("window beyond int64", arrays(), {"window": 2 ** 70}, ValueError, "window: "),
    ("window without causal", arrays(), {"window": 2, "causal": False}, ValueError, "window: requires causal"),
    ("sinks float64", arrays(), {"sinks": np.zeros(4)}, TypeError, "sinks: dtype must be float32, got float64"),
    ("sinks bfloat16", arrays(), {"sinks": np.zeros(4, BF16)}, TypeError, "sinks: dtype must be float32, got bfloat16"),
    ("sinks list", arrays(), {"sinks": [0.0] * 4}, TypeError, "sinks: expected an array, got list"),
    ("sinks scalar", arrays(), {"sinks": 0.5}, TypeError, "sinks: expected an array, got float"),
    ("sinks 2-D", arrays(), {"sinks": np.zeros((1, 4), F32)}, ValueError, "sinks: expected a 1-D array of length H = 4"),
    ("sinks 0-D", arrays(), {"sinks": np.zeros((), F32)}, ValueError, "sinks: expected a 1-D array of length H = 4"),
    ("sinks one per K/V head", arrays(), {"sinks": np.zeros(2, F32)}, ValueError,
     "sinks: expected one per query head (length H = 4), got length 2"),
    ("sinks empty", arrays(), {"sinks": np.zeros(0, F32)}, ValueError,
     "sinks: expected one per query head (length H = 4), got length 0"),
    ("sinks nan", arrays(), {"sinks": np.array([0, 1, np.nan, 2], F32)}, ValueError,
     "sinks: must be finite or -inf (no sink), got nan for head 2"),
    ("sinks +inf", arrays(), {"sinks": np.array([np.inf, 0, 0, 0], F32)}, ValueError,
     "sinks: must be finite or -inf (no sink), got inf for head 0"),
]
_Q = np.ones((1, 4, 3, 8), F32)
SDPA_BAD_CALLS = [r for r in SDPA_BAD_CALLS if r[0] != "out is q"]
SDPA_BAD_CALLS.append(("out is q", (_Q, np.ones((1, 2, 5, 8), F32), np.ones((1, 2, 5, 8), F32)), {"out": _Q},
                       ValueError, "out: must not overlap the input q"))



def prefill_arrays(q=(1, 4, 3, 64), kv=(1, 2, 5, 64), dtype=BF16, k_dtype=None):
    return np.ones(q, dtype=dtype), np.ones(kv, dtype=k_dtype or dtype), np.ones(kv, dtype=dtype)


M35 = np.zeros((3, 5), dtype=np.float32)
PREFILL_BAD_CALLS = [
    ("zero batch", prefill_arrays(q=(0, 4, 3, 64)), {}, ValueError, "q: every extent must be > 0, got B = 0"),
    ("zero q length", prefill_arrays(q=(1, 4, 0, 64)), {}, ValueError, "q: every extent must be > 0, got L = 0"),
    ("zero k length", prefill_arrays(kv=(1, 2, 0, 64)), {}, ValueError, "k: every extent must be > 0, got L = 0"),
    ("zero heads", prefill_arrays(q=(1, 0, 3, 64)), {}, ValueError, "q: every extent must be > 0, got H = 0"),
    ("H % H_kv", prefill_arrays(q=(1, 3, 3, 64)), {}, ValueError,
     "H (3) must be divisible by the number of K/V heads H_kv (2)"),
    ("D mismatch", prefill_arrays(kv=(1, 2, 5, 32)), {}, ValueError, "k: head dim D (q.shape[3]) must be 64, got 32"),
    ("llamacpp needs D=512", prefill_arrays(), {"kernel": "llamacpp"}, ValueError,
     "q: head dim D must be 512 for kernel='llamacpp', got 64"),
    ("unknown kernel", prefill_arrays(), {"kernel": "metal"}, ValueError, "kernel: must be one of"),
    ("nsg 6", prefill_arrays(), {"nsg": 6}, ValueError, "nsg: must be 4 or 8, got 6"),
    ("nsg float", prefill_arrays(), {"nsg": 4.0}, TypeError, "nsg: expected an integer"),
    ("window 0", prefill_arrays(), {"window": 0}, ValueError, "window: must be an int >= 1"),
    ("window float", prefill_arrays(), {"window": 3.0}, TypeError, "window: expected an integer"),
    ("q_offset negative", prefill_arrays(), {"q_offset": -1}, ValueError, "q_offset: must be an int from 0 to 2^30"),
    ("q_offset with bottom_right", prefill_arrays(), {"q_offset": 2, "causal": "bottom_right"}, ValueError,
     "q_offset: cannot be combined with causal='bottom_right'"),
    ("softcap negative", prefill_arrays(), {"softcap": -0.5}, ValueError, "softcap: must be finite and >= 0"),
    ("softcap nan", prefill_arrays(), {"softcap": float("nan")}, ValueError, "softcap: must be finite and >= 0"),
    ("softcap str", prefill_arrays(), {"softcap": "1"}, TypeError, "softcap: expected a real number"),
    ("sinks length", prefill_arrays(), {"sinks": np.zeros(3, np.float32)}, ValueError,
     "sinks: expected one per query head (length H = 4), got length 3"),
    ("sinks float64", prefill_arrays(), {"sinks": np.zeros(4)}, TypeError, "sinks: dtype must be float32"),
    ("sinks empty", prefill_arrays(), {"sinks": np.zeros(0, np.float32)}, ValueError, "sinks: expected one per query head"),
    ("sinks +inf", prefill_arrays(), {"sinks": np.array([0, np.inf, 0, 0], np.float32)}, ValueError,
     "sinks: must be finite or -inf (no sink)"),
    ("dtype mismatch", prefill_arrays(k_dtype=F16), {}, TypeError, "k: dtype must match q (bfloat16), got float16"),
    ("float64 q", prefill_arrays(dtype=np.float64), {}, TypeError, "q: dtype must be one of"),
    ("mask wrong shape", prefill_arrays(), {"mask": np.zeros((3, 6), np.float32)}, ValueError,
     "mask: shape (3, 6) does not broadcast to [B, H, Lq, Lk] = [1, 4, 3, 5]"),
    ("mask rank 1", prefill_arrays(), {"mask": np.zeros(5, np.float32)}, ValueError, "mask: expected [Lq, Lk]"),
    ("mask int dtype", prefill_arrays(), {"mask": np.zeros((3, 5), np.int32)}, TypeError,
     "mask: dtype must be bool (True = attend) or an additive float32, float16 or bfloat16, got int32"),
    ("mask float64", prefill_arrays(), {"mask": np.zeros((3, 5))}, TypeError, "mask: dtype must be bool"),
    ("mask not an array", prefill_arrays(), {"mask": [[0.0] * 5] * 3}, TypeError, "mask: expected an array, got list"),
    ("blk without mask", prefill_arrays(), {"blk": np.ones((1, 1), np.uint8)}, ValueError,
     "blk: a tile-skip map needs the mask it was built from"),
    ("blk wrong shape", prefill_arrays(), {"mask": M35, "blk": np.ones((1, 2), np.uint8)}, ValueError,
     "blk: shape must be [ceil(Lq/32), ceil(Lk/16)] = [1, 1] for kernel='candle', got [1, 2]"),
    ("blk wrong dtype", prefill_arrays(), {"mask": M35, "blk": np.ones((1, 1), np.int64)}, TypeError,
     "blk: dtype must be uint8"),
    ("blk 1-D", prefill_arrays(), {"mask": M35, "blk": np.ones(1, np.uint8)}, ValueError, "blk: expected a 2-D"),
    ("blk bad value", prefill_arrays(), {"mask": M35, "blk": np.full((1, 1), 3, np.uint8)}, ValueError,
     "blk: entries must be 0, 1 or 2, got 3"),
    ("layout unknown", prefill_arrays(), {"layout": "hbld"}, ValueError, "layout: must be one of"),
    ("q 3-D", (np.ones((4, 3, 64), BF16),) + prefill_arrays()[1:], {}, ValueError, "q: expected a 4-D array"),
    ("scale nan", prefill_arrays(), {"scale": float("nan")}, ValueError, "scale: must be finite"),
    ("k_tile not power of two", prefill_arrays(), {"k_tile": 24}, ValueError,
     "k_tile: must be a power of two from 8 to 1024"),
    ("q_tile zero", prefill_arrays(), {"q_tile": 0}, ValueError, "q_tile: must be from 1 to 1024, got 0"),
    ("llamacpp k_tile", prefill_arrays(q=(1, 4, 3, 512), kv=(1, 2, 5, 512)), {"kernel": "llamacpp", "k_tile": 32},
     ValueError, "k_tile: kernel='llamacpp' works on chunks of 64 keys, got 32"),
    ("causal not bool", prefill_arrays(), {"causal": 1}, TypeError, "causal: expected a bool"),
    ("return_lse not bool", prefill_arrays(), {"return_lse": "yes"}, TypeError, "return_lse: expected a bool"),
    # dtypes, ranks, extents
    ("v dtype differs", prefill_arrays()[:2] + (np.ones((1, 2, 5, 64), F32),), {}, TypeError,
     "v: dtype must match q (bfloat16), got float32"),
    ("int8 q", prefill_arrays(dtype=np.int8), {}, TypeError, "q: dtype must be one of"),
    ("k 5-D", (prefill_arrays()[0], np.ones((1, 1, 2, 5, 64), BF16), prefill_arrays()[2]), {}, ValueError,
     "k: expected a 4-D array [B, H, L, D]"),
    ("v 2-D blhd", prefill_arrays()[:2] + (np.ones((5, 64), BF16),), {"layout": "blhd"}, ValueError,
     "v: expected a 4-D array [B, L, H, D]"),
    ("batch mismatch", prefill_arrays(q=(2, 4, 3, 64)), {}, ValueError, "k: batch size B (q.shape[0]) must be 2, got 1"),
    ("v length differs", prefill_arrays()[:2] + (np.ones((1, 2, 6, 64), BF16),), {}, ValueError,
     "v: shape must equal k's [1, 2, 5, 64], got [1, 2, 6, 64]"),
    ("blhd H % H_kv", prefill_arrays(q=(1, 3, 3, 64), kv=(1, 5, 2, 64)), {"layout": "blhd"}, ValueError,
     "H (3) must be divisible by the number of K/V heads H_kv (2)"),
    ("blhd zero length", prefill_arrays(q=(1, 0, 4, 64), kv=(1, 5, 2, 64)), {"layout": "blhd"}, ValueError,
     "q: every extent must be > 0, got L = 0"),
    ("zero head dim", prefill_arrays(q=(1, 4, 3, 0), kv=(1, 2, 5, 0)), {}, ValueError,
     "q: every extent must be > 0, got D = 0"),
    ("head dim 8192", prefill_arrays(q=(1, 1, 1, 8192), kv=(1, 1, 1, 8192)), {}, ValueError,
     "q: head dim D must be <= 4096, got 8192"),
    ("layout not a string", prefill_arrays(), {"layout": 0}, ValueError, "layout: must be one of"),
    # masks
    ("mask 4-D wrong batch", prefill_arrays(), {"mask": np.zeros((2, 4, 3, 5), np.float32)}, ValueError,
     "mask: shape (2, 4, 3, 5) does not broadcast to [B, H, Lq, Lk] = [1, 4, 3, 5]"),
    ("mask 5-D", prefill_arrays(), {"mask": np.zeros((1, 1, 4, 3, 5), np.float32)}, ValueError,
     "mask: expected [Lq, Lk]"),
    ("mask transposed", prefill_arrays(), {"mask": np.zeros((5, 3), bool)}, ValueError,
     "mask: shape (5, 3) does not broadcast"),
    ("mask uint8", prefill_arrays(), {"mask": np.zeros((3, 5), np.uint8)}, TypeError, "mask: dtype must be bool"),
    ("mask complex", prefill_arrays(), {"mask": np.zeros((3, 5), np.complex64)}, TypeError, "mask: dtype must be bool"),
    ("mask scalar", prefill_arrays(), {"mask": 0.0}, TypeError, "mask: expected an array, got float"),
    # blk
    ("blk with bool mask, wrong shape", prefill_arrays(), {"mask": np.ones((3, 5), bool),
                                                           "blk": np.ones((2, 1), np.uint8)}, ValueError,
     "blk: shape must be [ceil(Lq/32), ceil(Lk/16)] = [1, 1]"),
    ("blk for other k_tile", prefill_arrays(kv=(1, 2, 40, 64)), {"mask": np.zeros((3, 40), np.float32),
                                                                "blk": np.ones((1, 3), np.uint8), "k_tile": 8},
     ValueError, "blk: shape must be [ceil(Lq/32), ceil(Lk/8)] = [1, 5]"),
    ("blk 3-D", prefill_arrays(), {"mask": M35, "blk": np.ones((1, 1, 1), np.uint8)}, ValueError,
     "blk: expected a 2-D"),
    ("blk bool", prefill_arrays(), {"mask": M35, "blk": np.ones((1, 1), bool)}, TypeError, "blk: dtype must be uint8"),
    ("blk list", prefill_arrays(), {"mask": M35, "blk": [[1]]}, TypeError, "blk: expected an array, got list"),
    ("blk huge without mask", prefill_arrays(), {"blk": huge((BIG, 1), np.uint8)}, ValueError,
     "blk: a tile-skip map needs the mask"),
    ("blk huge wrong shape", prefill_arrays(), {"mask": M35, "blk": huge((BIG, 1), np.uint8)}, ValueError,
     "blk: shape must be"),
    # nsg, tiles
    ("nsg 0", prefill_arrays(), {"nsg": 0}, ValueError, "nsg: must be 4 or 8, got 0"),
    ("nsg negative", prefill_arrays(), {"nsg": -8}, ValueError, "nsg: must be 4 or 8, got -8"),
    ("nsg beyond int32", prefill_arrays(), {"nsg": 2 ** 40}, ValueError, "nsg: must be 4 or 8"),
    ("q_tile negative", prefill_arrays(), {"q_tile": -32}, ValueError, "q_tile: must be from 1 to 1024, got -32"),
    ("q_tile huge", prefill_arrays(), {"q_tile": 2 ** 40}, ValueError, "q_tile: must be from 1 to 1024"),
    ("q_tile beyond int64", prefill_arrays(), {"q_tile": 2 ** 64}, ValueError, "q_tile: "),
    ("k_tile 4", prefill_arrays(), {"k_tile": 4}, ValueError, "k_tile: must be a power of two"),
    ("k_tile float", prefill_arrays(), {"k_tile": 16.0}, TypeError, "k_tile: expected an integer"),
    ("scale -inf", prefill_arrays(), {"scale": float("-inf")}, ValueError, "scale: must be finite"),
    # huge (zero-stride) inputs
    ("huge q, D mismatch", (huge((1, 4, BIG, 64), BF16),) + prefill_arrays(kv=(1, 2, 5, 32))[1:], {}, ValueError,
     "k: head dim D (q.shape[3]) must be 64, got 32"),
    ("huge q, mask shape", (huge((1, 4, BIG, 64), BF16),) + prefill_arrays()[1:], {"mask": M35}, ValueError,
     "mask: shape (3, 5) does not broadcast"),
    ("huge q, nsg", (huge((1, 4, BIG, 64), BF16),) + prefill_arrays()[1:], {"nsg": 5}, ValueError,
     "nsg: must be 4 or 8, got 5"),
    ("huge q, llamacpp D", (huge((1, 4, BIG, 64), BF16),) + prefill_arrays()[1:], {"kernel": "llamacpp"},
     ValueError, "q: head dim D must be 512 for kernel='llamacpp', got 64"),
    ("huge q, k_tile", (huge((1, 4, BIG, 64), BF16),) + prefill_arrays()[1:], {"k_tile": 3}, ValueError,
     "k_tile: must be a power of two"),
    ("huge k, blk shape", prefill_arrays()[:1] + (huge((1, 2, BIG, 64), BF16), huge((1, 2, BIG, 64), BF16)),
     {"mask": huge((3, BIG), bool), "blk": np.ones((1, 1), np.uint8)}, ValueError, "blk: shape must be"),
    # out=
    ("out read-only", prefill_arrays(), {"out": read_only((1, 4, 3, 64), BF16)}, ValueError, "out: must be writable"),
    ("out f32 for bf16", prefill_arrays(), {"out": np.zeros((1, 4, 3, 64), F32)}, TypeError,
     "out: dtype must be bfloat16, got float32"),
    ("out in the other layout", prefill_arrays(), {"out": np.zeros((1, 3, 4, 64), BF16)}, ValueError,
     "out: shape must be (1, 4, 3, 64), got (1, 3, 4, 64)"),
    ("out overlaps itself", prefill_arrays(), {"out": self_overlapping((1, 4, 3, 64), BF16)}, ValueError,
     "out: must not overlap itself"),
    ("out tuple", prefill_arrays(), {"out": (0.0,)}, TypeError, "out: expected an array, got tuple"),
    ("out is the mask", (np.ones((1, 1, 3, 5), F32), np.ones((1, 1, 5, 5), F32), np.ones((1, 1, 5, 5), F32)),
     {"mask": M35, "out": M35.reshape(1, 1, 3, 5)}, ValueError, "out: must not overlap the input mask"),
    # not arrays
    ("v int", prefill_arrays()[:2] + (7,), {}, TypeError, "v: expected an array, got int"),
    ("k None", (prefill_arrays()[0], None, prefill_arrays()[2]), {}, TypeError, "k: expected an array, got NoneType"),
]



BLK_BAD_CALLS = [
    ("no geometry", (M35,), {}, ValueError, "head_dim: needed to choose the tile geometry"),
    ("mask rank 3", (np.zeros((1, 3, 5), np.float32),), {"head_dim": 64}, ValueError,
     "mask: expected [Lq, Lk] or [B, H, Lq, Lk]"),
    ("mask int", (np.zeros((3, 5), np.int8),), {"head_dim": 64}, TypeError, "mask: dtype must be bool"),
    ("mask zero rows", (np.zeros((0, 5), np.float32),), {"head_dim": 64}, ValueError,
     "mask: every extent must be > 0"),
    ("bad kernel", (M35,), {"head_dim": 64, "kernel": "x"}, ValueError, "kernel: must be one of"),
    ("bad k_tile", (M35,), {"head_dim": 64, "k_tile": 12}, ValueError, "k_tile: must be a power of two"),
    ("not an array", ([[0.0]],), {"head_dim": 64}, TypeError, "mask: expected an array, got list"),
    ("mask None", (None,), {"head_dim": 64}, TypeError, "mask: expected an array, got NoneType"),
    ("mask 1-D", (np.zeros(5, np.float32),), {"head_dim": 64}, ValueError, "mask: expected [Lq, Lk] or"),
    ("mask float64", (np.zeros((3, 5)),), {"head_dim": 64}, TypeError, "mask: dtype must be bool"),
    ("mask zero columns 4-D", (np.zeros((1, 1, 3, 0), bool),), {"head_dim": 64}, ValueError,
     "mask: every extent must be > 0"),
    ("head_dim 0", (M35,), {"head_dim": 0}, ValueError, "head_dim: must be >= 1, got 0"),
    ("head_dim negative", (M35,), {"head_dim": -64}, ValueError, "head_dim: must be >= 1, got -64"),
    ("head_dim float", (M35,), {"head_dim": 64.0}, TypeError, "head_dim: expected an integer"),
    ("q_tile 0", (M35,), {"head_dim": 64, "q_tile": 0}, ValueError, "q_tile: must be from 1 to 1024, got 0"),
    ("llamacpp k_tile", (M35,), {"kernel": "llamacpp", "k_tile": 16}, ValueError,
     "k_tile: kernel='llamacpp' works on chunks of 64 keys"),
    ("huge mask, no geometry", (huge((BIG, 5), bool),), {}, ValueError, "head_dim: needed to choose"),
    ("huge mask, int", (huge((BIG, 5), np.int16),), {"head_dim": 64}, TypeError, "mask: dtype must be bool"),
    ("huge mask, rank 3", (huge((2, BIG, 5), bool),), {"head_dim": 64}, ValueError,
     "mask: expected [Lq, Lk] or [B, H, Lq, Lk]"),
]



def vec_arrays(q=(4, 64), kv=(2, 10, 64), q_dtype=F32, kv_dtype=F16, v_dtype=None):
    return np.ones(q, q_dtype), np.ones(kv, kv_dtype), np.ones(kv, v_dtype or kv_dtype)


VEC_BAD_CALLS = [
    ("huge f16 q, batch mismatch (never widened)", (huge((2 ** 20, 2 ** 20, 64), F16), np.ones((3, 2, 10, 64), F16),
                                                  np.ones((3, 2, 10, 64), F16)), {"kv_seq_len": 5}, ValueError,
     "k_cache: batch size B"),
    ("head dim 48", vec_arrays(q=(4, 48), kv=(2, 10, 48)), {"kv_seq_len": 5}, ValueError,
     "q: head dim D must be a multiple of 32 up to 512 (the seed has 256 and 512), got 48"),
    ("head dim 1024", vec_arrays(q=(4, 1024), kv=(2, 10, 1024)), {"kv_seq_len": 5}, ValueError,
     "head dim D must be a multiple of 32 up to 512"),
    ("zero heads", vec_arrays(q=(0, 64)), {"kv_seq_len": 5}, ValueError, "q: every extent must be > 0, got H = 0"),
    ("zero kv heads", vec_arrays(kv=(0, 10, 64)), {"kv_seq_len": 5}, ValueError,
     "k_cache: every extent must be > 0"),
    ("H % H_kv", vec_arrays(q=(3, 64)), {"kv_seq_len": 5}, ValueError, "H (3) must be divisible by"),
    ("kv_seq_len 0", vec_arrays(), {"kv_seq_len": 0}, ValueError, "kv_seq_len: must be >= 1, got 0"),
    ("capacity < kv_seq_len", vec_arrays(), {"kv_seq_len": 11}, ValueError,
     "kv_seq_len: must be <= the capacity of k_cache and v_cache (10), got 11"),
    ("kv_seq_len missing", vec_arrays(), {}, TypeError, "kv_seq_len"),
    ("k/v dtypes differ", vec_arrays(v_dtype=F32), {"kv_seq_len": 5}, TypeError,
     "v_cache: dtype must match k_cache (float16), got float32"),
    ("k int8", vec_arrays(kv_dtype=np.int8), {"kv_seq_len": 5}, TypeError, "k_cache: dtype must be one of"),
    ("rank mismatch", (np.ones((4, 64), F32), np.ones((1, 2, 10, 64), F16), np.ones((1, 2, 10, 64), F16)),
     {"kv_seq_len": 5}, ValueError, "k_cache: expected [H_kv, capacity, D] to go with q of shape (4, 64)"),
    ("q 1-D", (np.ones(64, F32),) + vec_arrays()[1:], {"kv_seq_len": 5}, ValueError, "q: expected [H, D] or [B, H, D]"),
    ("batch mismatch", (np.ones((2, 4, 64), F32), np.ones((1, 2, 10, 64), F16), np.ones((1, 2, 10, 64), F16)),
     {"kv_seq_len": 5}, ValueError, "k_cache: batch size B (q's) must be 2, got 1"),
    ("D mismatch", (np.ones((4, 64), F32), np.ones((2, 10, 32), F16), np.ones((2, 10, 32), F16)),
     {"kv_seq_len": 5}, ValueError, "k_cache: head dim D (q's) must be 64, got 32"),
    ("v shape", (np.ones((4, 64), F32), np.ones((2, 10, 64), F16), np.ones((2, 9, 64), F16)), {"kv_seq_len": 5},
     ValueError, "v_cache: shape must equal k_cache's"),
    ("mask name", vec_arrays(), {"kv_seq_len": 5, "mask": "window"}, ValueError, "mask: must be one of"),
    ("window negative", vec_arrays(), {"kv_seq_len": 5, "mask": "sliding_window", "window": -1}, ValueError,
     "window: must be >= 0, got -1"),
    ("window float", vec_arrays(), {"kv_seq_len": 5, "window": 2.5}, TypeError, "window: expected an integer"),
    ("nwg 0", vec_arrays(), {"kv_seq_len": 5, "nwg": 0}, ValueError, "nwg: must be from 1 to 64, got 0"),
    ("nwg 65", vec_arrays(), {"kv_seq_len": 5, "nwg": 65}, ValueError, "nwg: must be from 1 to 64, got 65"),
    ("softcap negative", vec_arrays(), {"kv_seq_len": 5, "softcap": -1.0}, ValueError, "softcap: must be finite"),
    ("softcap nan", vec_arrays(), {"kv_seq_len": 5, "softcap": float("nan")}, ValueError, "softcap: must be finite"),
    ("scale inf", vec_arrays(), {"kv_seq_len": 5, "scale": float("inf")}, ValueError, "scale: must be finite"),
    ("cache not array", (np.ones((4, 64), F32), "cache", np.ones((2, 10, 64), F16)), {"kv_seq_len": 5}, TypeError,
     "k_cache: expected an array, got str"),
    # dtypes, ranks, extents
    ("q int32", vec_arrays(q_dtype=np.int32), {"kv_seq_len": 5}, TypeError, "q: dtype must be float32, float16"),
    ("q f64", vec_arrays(q_dtype=np.float64), {"kv_seq_len": 5}, TypeError, "q: dtype must be float32"),
    ("k bf16 v f16", vec_arrays(kv_dtype=BF16, v_dtype=F16), {"kv_seq_len": 5}, TypeError,
     "v_cache: dtype must match k_cache (bfloat16), got float16"),
    ("k f64", vec_arrays(kv_dtype=np.float64), {"kv_seq_len": 5}, TypeError, "k_cache: dtype must be one of"),
    ("q 4-D", (np.ones((1, 4, 1, 64), F32),) + vec_arrays()[1:], {"kv_seq_len": 5}, ValueError,
     "q: expected [H, D] or [B, H, D]"),
    ("v_cache rank", vec_arrays()[:2] + (np.ones((1, 2, 10, 64), F16),), {"kv_seq_len": 5}, ValueError,
     "v_cache: expected [H_kv, capacity, D] to go with q of shape (4, 64)"),
    ("zero head dim", vec_arrays(q=(4, 0), kv=(2, 10, 0)), {"kv_seq_len": 5}, ValueError,
     "q: every extent must be > 0, got D = 0"),
    ("zero capacity", vec_arrays(kv=(2, 0, 64)), {"kv_seq_len": 1}, ValueError,
     "k_cache: every extent must be > 0, got L = 0"),
    ("zero batch", (np.ones((0, 4, 64), F32), np.ones((0, 2, 10, 64), F16), np.ones((0, 2, 10, 64), F16)),
     {"kv_seq_len": 5}, ValueError, "q: every extent must be > 0, got B = 0"),
    ("kv heads > q heads", vec_arrays(q=(2, 64), kv=(4, 10, 64)), {"kv_seq_len": 5}, ValueError,
     "H (2) must be divisible by the number of K/V heads H_kv (4)"),
    ("v heads differ", vec_arrays()[:2] + (np.ones((4, 10, 64), F16),), {"kv_seq_len": 5}, ValueError,
     "v_cache: shape must equal k_cache's"),
    ("kv_seq_len negative", vec_arrays(), {"kv_seq_len": -3}, ValueError, "kv_seq_len: must be >= 1, got -3"),
    ("kv_seq_len beyond int64", vec_arrays(), {"kv_seq_len": -2 ** 80}, ValueError, "kv_seq_len: "),
    ("kv_seq_len str", vec_arrays(), {"kv_seq_len": "5"}, TypeError, "kv_seq_len: expected an integer"),
    # mask, window, nwg, softcap, scale
    ("mask None", vec_arrays(), {"kv_seq_len": 5, "mask": None}, ValueError, "mask: must be one of"),
    ("window beyond int64", vec_arrays(), {"kv_seq_len": 5, "mask": "sliding_window", "window": 2 ** 70},
     ValueError, "window: "),
    ("window negative, no mask", vec_arrays(), {"kv_seq_len": 5, "window": -5}, ValueError,
     "window: must be >= 0, got -5"),
    ("nwg negative", vec_arrays(), {"kv_seq_len": 5, "nwg": -1}, ValueError, "nwg: must be from 1 to 64, got -1"),
    ("nwg beyond int32", vec_arrays(), {"kv_seq_len": 5, "nwg": 2 ** 40}, ValueError, "nwg: must be from 1 to 64"),
    ("nwg float", vec_arrays(), {"kv_seq_len": 5, "nwg": 32.0}, TypeError, "nwg: expected an integer"),
    ("softcap inf", vec_arrays(), {"kv_seq_len": 5, "softcap": float("inf")}, ValueError, "softcap: must be finite"),
    ("softcap string", vec_arrays(), {"kv_seq_len": 5, "softcap": "1"}, TypeError, "softcap: expected a real number"),
    ("scale nan", vec_arrays(), {"kv_seq_len": 5, "scale": float("nan")}, ValueError, "scale: must be finite"),
    ("scale -inf", vec_arrays(), {"kv_seq_len": 5, "scale": -float("inf")}, ValueError, "scale: must be finite"),
    # huge (zero-stride) inputs
    ("huge q, D mismatch", (huge((BIG, 64)), np.ones((2, 10, 32), F16), np.ones((2, 10, 32), F16)),
     {"kv_seq_len": 5}, ValueError, "k_cache: head dim D (q's) must be 64, got 32"),
    ("huge q heads, H % H_kv", (huge((2 ** 32 + 1, 64)),) + vec_arrays()[1:], {"kv_seq_len": 5}, ValueError,
     "must be divisible by the number of K/V heads H_kv (2)"),
    ("huge cache, kv_seq_len > capacity", (np.ones((4, 64), F32), huge((2, BIG, 64), F16), huge((2, BIG, 64), F16)),
     {"kv_seq_len": BIG + 1}, ValueError, f"kv_seq_len: must be <= the capacity of k_cache and v_cache ({BIG}), got {BIG + 1}"),
    ("huge q, nwg", (huge((BIG, 64)),) + vec_arrays(kv=(1, 10, 64))[1:], {"kv_seq_len": 5, "nwg": 100}, ValueError,
     "nwg: must be from 1 to 64, got 100"),
    ("huge batch, batch mismatch", (huge((BIG, 4, 64)), np.ones((1, 2, 10, 64), F16), np.ones((1, 2, 10, 64), F16)),
     {"kv_seq_len": 5}, ValueError, "k_cache: batch size B (q's) must be"),
    # not arrays
    ("q list", ([[0.0] * 64] * 4,) + vec_arrays()[1:], {"kv_seq_len": 5}, TypeError, "q: expected an array, got list"),
    ("v_cache None", vec_arrays()[:2] + (None,), {"kv_seq_len": 5}, TypeError, "v_cache: expected an array"),
    # sinks: float32 [H], finite or -inf
    ("sinks f64", vec_arrays(), {"kv_seq_len": 5, "sinks": np.zeros(4)}, TypeError,
     "sinks: dtype must be float32, got float64"),
    ("sinks f16", vec_arrays(), {"kv_seq_len": 5, "sinks": np.zeros(4, F16)}, TypeError, "sinks: dtype must be float32"),
    ("sinks list", vec_arrays(), {"kv_seq_len": 5, "sinks": [0.0] * 4}, TypeError, "sinks: expected an array"),
    ("sinks length", vec_arrays(), {"kv_seq_len": 5, "sinks": np.zeros(3, F32)}, ValueError,
     "sinks: expected one per query head (length H = 4), got length 3"),
    ("sinks kv heads long", vec_arrays(), {"kv_seq_len": 5, "sinks": np.zeros(2, F32)}, ValueError,
     "sinks: expected one per query head (length H = 4)"),
    ("sinks 2-D", vec_arrays(), {"kv_seq_len": 5, "sinks": np.zeros((1, 4), F32)}, ValueError,
     "sinks: expected a 1-D array of length H = 4"),
    ("sinks 0-D", vec_arrays(), {"kv_seq_len": 5, "sinks": np.zeros((), F32)}, ValueError,
     "sinks: expected a 1-D array of length H = 4"),
    ("sinks nan", vec_arrays(), {"kv_seq_len": 5, "sinks": np.array([0, np.nan, 0, 0], F32)}, ValueError,
     "sinks: must be finite or -inf (no sink), got nan for head 1"),
    ("sinks +inf", vec_arrays(), {"kv_seq_len": 5, "sinks": np.array([0, 0, 0, np.inf], F32)}, ValueError,
     "sinks: must be finite or -inf (no sink), got inf for head 3"),
    ("sinks batched length", (np.ones((2, 4, 64), F32), np.ones((2, 2, 10, 64), F16), np.ones((2, 2, 10, 64), F16)),
     {"kv_seq_len": 5, "sinks": np.zeros(8, F32)}, ValueError, "sinks: expected one per query head (length H = 4)"),
    # ring_start: an int in [0, capacity)
    ("ring_start negative", vec_arrays(), {"kv_seq_len": 5, "ring_start": -1}, ValueError,
     "ring_start: must be from 0 to capacity - 1 (9), got -1"),
    ("ring_start = capacity", vec_arrays(), {"kv_seq_len": 5, "ring_start": 10}, ValueError,
     "ring_start: must be from 0 to capacity - 1 (9), got 10"),
    ("ring_start beyond int64", vec_arrays(), {"kv_seq_len": 5, "ring_start": 2 ** 70}, ValueError, "ring_start: "),
    ("ring_start float", vec_arrays(), {"kv_seq_len": 5, "ring_start": 1.0}, TypeError,
     "ring_start: expected an integer, got float"),
    ("ring_start bool", vec_arrays(), {"kv_seq_len": 5, "ring_start": True}, TypeError,
     "ring_start: expected an integer, got bool"),
]

_QV = np.ones((4, 64), F32)
VEC_OUT_BAD_CALLS = [
    ("out read-only", vec_arrays(), {"kv_seq_len": 5, "out": read_only((4, 64))}, ValueError,
     "out: must be writable"),
    ("out f16", vec_arrays(), {"kv_seq_len": 5, "out": np.zeros((4, 64), F16)}, TypeError,
     "out: dtype must be float32, got float16"),
    ("out shape", vec_arrays(), {"kv_seq_len": 5, "out": np.zeros((1, 4, 64), F32)}, ValueError,
     "out: shape must be (4, 64), got (1, 4, 64)"),
    ("out overlaps itself", vec_arrays(), {"kv_seq_len": 5, "out": self_overlapping((4, 64))}, ValueError,
     "out: must not overlap itself"),
    ("out is q", (_QV,) + vec_arrays()[1:], {"kv_seq_len": 5, "out": _QV}, ValueError,
     "out: must not overlap the input q"),
    ("out dict", vec_arrays(), {"kv_seq_len": 5, "out": {}}, TypeError, "out: expected an array, got dict"),
]



O = np.zeros((4, 8, 64), np.float32)
S = np.zeros((4, 8), np.float32)
REDUCE_BAD_CALLS = [
    ("o f16", (O.astype(F16), S, S), {}, TypeError, "o: dtype must be float32"),
    ("s shape", (O, S[:, :4], S), {}, ValueError, "s: shape must be o's without D"),
    ("o 2-D", (O[0], S, S), {}, ValueError, "o: expected [H, nwg, D] or [B, H, nwg, D]"),
    ("nwg 65", (np.zeros((4, 65, 64), np.float32), np.zeros((4, 65), np.float32), np.zeros((4, 65), np.float32)),
     {}, ValueError, "nwg (the group axis) must be from 1 to 64"),
    ("s int", (O, S.astype(np.int32), S), {}, TypeError, "s: dtype must be float32"),
    ("m bf16", (O, S, S.astype(BF16)), {}, TypeError, "m: dtype must be float32"),
    ("o 5-D", (O[None, None], S[None, None], S[None, None]), {}, ValueError, "o: expected [H, nwg, D]"),
    ("m rank", (O, S, S[None]), {}, ValueError, "m: shape must be o's without D, (4, 8), got (1, 4, 8)"),
    ("s heads", (O, S[:3], S[:3]), {}, ValueError, "s: shape must be o's without D"),
    ("zero groups", (O[:, :0], S[:, :0], S[:, :0]), {}, ValueError, "o: every extent must be > 0"),
    ("zero head dim", (O[..., :0], S, S), {}, ValueError, "o: every extent must be > 0, got D = 0"),
    ("huge o, s shape", (huge((BIG, 8, 64)), S, S), {}, ValueError, "s: shape must be o's without D"),
    ("huge o, nwg 100", (huge((BIG, 100, 64)), huge((BIG, 100)), huge((BIG, 100))), {}, ValueError,
     "o: nwg (the group axis) must be from 1 to 64, got 100"),
    ("out read-only", (O, S, S), {"out": read_only((4, 64))}, ValueError, "out: must be writable"),
    ("out f64", (O, S, S), {"out": np.zeros((4, 64))}, TypeError, "out: dtype must be float32, got float64"),
    ("out shape", (O, S, S), {"out": np.zeros((4, 8, 64), F32)}, ValueError, "out: shape must be (4, 64)"),
    ("out overlaps itself", (O, S, S), {"out": self_overlapping((4, 64))}, ValueError, "out: must not overlap itself"),
    ("out is o", (O, S, S), {"out": O[:, 0]}, ValueError, "out: must not overlap the input o"),
    ("o list", (O.tolist(), S, S), {}, TypeError, "o: expected an array, got list"),
    ("m None", (O, S, None), {}, TypeError, "m: expected an array, got NoneType"),
]



OUT = np.zeros((3, 8), np.float32)
LSE = np.zeros(3, np.float32)
MERGE_BAD_CALLS = [
    ("empty", ([], []), {}, ValueError, "outputs: need at least one"),
    ("count mismatch", ([OUT, OUT], [LSE]), {}, ValueError, "lses: need one per output (2), got 1"),
    ("shape mismatch", ([OUT, OUT[:2]], [LSE, LSE]), {}, ValueError, "outputs[1]: shape must be (3, 8)"),
    ("lse shape", ([OUT], [LSE[:2]]), {}, ValueError, "lses[0]: shape must be (3,)"),
    ("array not list", (np.stack([OUT, OUT]), [LSE, LSE]), {}, TypeError, "expected sequences"),
    ("int outputs", ([OUT.astype(np.int32)], [LSE]), {}, TypeError, "outputs[0]: dtype must be one of"),
    ("not arrays", ([[1.0]], [LSE]), {}, TypeError, "outputs[0]: expected an array, got list"),
    ("lses count short", ([OUT, OUT, OUT], [LSE, LSE]), {}, ValueError, "lses: need one per output (3), got 2"),
    ("D mismatch", ([OUT, OUT[:, :4]], [LSE, LSE]), {}, ValueError, "outputs[1]: shape must be (3, 8)"),
    ("lse rank", ([OUT], [LSE[:, None]]), {}, ValueError, "lses[0]: shape must be (3,)"),
    ("second lse int", ([OUT, OUT], [LSE, LSE.astype(np.int64)]), {}, TypeError, "lses[1]: dtype must be one of"),
    ("f64 output", ([OUT, OUT.astype(np.float64)], [LSE, LSE]), {}, TypeError, "outputs[1]: dtype must be one of"),
    ("zero rows", ([OUT[:0]], [LSE[:0]]), {}, ValueError, "outputs: every extent must be > 0"),
    ("zero head dim", ([OUT[:, :0]], [LSE]), {}, ValueError, "outputs: every extent must be > 0"),
    ("scalar output", ([np.float32(1.0)], [LSE]), {}, TypeError, "outputs[0]: expected an array, got float32"),
    ("lses None", ([OUT], None), {}, TypeError, "outputs, lses: expected sequences"),
    ("outputs a generator", ((o for o in [OUT]), [LSE]), {}, TypeError, "outputs, lses: expected sequences"),
    ("second lse None", ([OUT, OUT], [LSE, None]), {}, TypeError, "lses[1]: expected an array, got NoneType"),
    ("huge output, lse shape", ([huge((BIG, 8))], [LSE]), {}, ValueError, "lses[0]: shape must be"),
    ("huge outputs, one f64", ([huge((BIG, 8)), huge((BIG, 8), np.float64)], [huge((BIG,)), huge((BIG,))]), {},
     TypeError, "outputs[1]: dtype must be one of"),
    ("out read-only", ([OUT], [LSE]), {"out": read_only((3, 8))}, ValueError, "out: must be writable"),
    ("out f16", ([OUT], [LSE]), {"out": np.zeros((3, 8), F16)}, TypeError, "out: dtype must be float32, got float16"),
    ("out shape", ([OUT], [LSE]), {"out": np.zeros((3, 9), F32)}, ValueError, "out: shape must be (3, 8)"),
    ("out overlaps itself", ([OUT], [LSE]), {"out": self_overlapping((3, 8))}, ValueError,
     "out: must not overlap itself"),
    ("out is an input", ([OUT], [LSE]), {"out": OUT}, ValueError, "out: must not overlap the input outputs[0]"),
    ("out int", ([OUT], [LSE]), {"out": 3}, TypeError, "out: expected an array, got int"),
    # sinks: float32 [H] along the head axis (-2 for [rows, D] outputs: H = 3 here)
    ("sinks f64", ([OUT], [LSE]), {"sinks": np.zeros(3)}, TypeError, "sinks: dtype must be one of float32"),
    ("sinks list", ([OUT], [LSE]), {"sinks": [0.0] * 3}, TypeError, "sinks: expected an array, got list"),
    ("sinks length", ([OUT], [LSE]), {"sinks": np.zeros(4, F32)}, ValueError,
     "sinks: expected a 1-D array of length H = 3 (the outputs' head axis), got shape (4,)"),
    ("sinks 2-D", ([OUT], [LSE]), {"sinks": np.zeros((1, 3), F32)}, ValueError,
     "sinks: expected a 1-D array of length H = 3"),
    ("sinks nan", ([OUT], [LSE]), {"sinks": np.array([0, 0, np.nan], F32)}, ValueError,
     "sinks: must be finite or -inf (no sink), got nan for head 2"),
    ("sinks +inf", ([OUT], [LSE]), {"sinks": np.array([np.inf, 0, 0], F32)}, ValueError,
     "sinks: must be finite or -inf (no sink), got inf for head 0"),
    ("sinks, 1-D outputs", ([OUT[0]], [LSE[:1].reshape(())]), {"sinks": np.zeros(1, F32)}, ValueError,
     "sinks: the outputs need a head axis"),
    ("sinks 4-D length", ([np.zeros((2, 3, 5, 8), F32)], [np.zeros((2, 3, 5), F32)]), {"sinks": np.zeros(5, F32)},
     ValueError, "sinks: expected a 1-D array of length H = 3"),
    ("head_axis D", ([OUT], [LSE]), {"sinks": np.zeros(3, F32), "head_axis": -1}, ValueError,
     "head_axis: must name an axis of the outputs other than D's (-2 to 0), got -1"),
    ("head_axis past", ([OUT], [LSE]), {"sinks": np.zeros(3, F32), "head_axis": 1}, ValueError,
     "head_axis: must name an axis of the outputs other than D's"),
    ("head_axis float", ([OUT], [LSE]), {"sinks": np.zeros(3, F32), "head_axis": 0.0}, TypeError,
     "head_axis: expected an integer, got float"),
]


ROUND_BAD_CALLS = [
    ("x list", ([1.0, 2.0], F16), {}, TypeError, "x: expected an array, got list"),
    ("x float", (1.0, F16), {}, TypeError, "x: expected an array, got float"),
    ("x int32", (np.ones(3, np.int32), F16), {}, TypeError, "x: dtype must be one of"),
    ("x int64", (np.ones(3, np.int64), F16), {}, TypeError, "x: dtype must be one of float64, float32"),
    ("x complex", (np.ones(3, np.complex64), F16), {}, TypeError, "x: dtype must be one of float64, float32"),
    ("dtype f64", (np.ones(3, F32), np.float64), {}, TypeError, "dtype: dtype must be one of"),
    ("dtype int8", (np.ones(3, F32), "int8"), {}, TypeError, "dtype: dtype must be one of"),
    ("dtype nonsense", (np.ones(3, F32), "no-such-type"), {}, TypeError, "dtype: not a dtype"),
    ("huge x, dtype f64", (huge((BIG, 4)), np.float64), {}, TypeError, "dtype: dtype must be one of"),
]


def _with(value, at=(0, 5)):
    x = np.ones((2, 32), F32)
    x[at] = value
    return x


_BLOCKS = np.zeros((3, 34), np.uint8)
QUANTIZE_BAD_CALLS = [
    ("D not a multiple of 32", (np.ones((2, 48), F32), "q8_0"), {}, ValueError,
     "x: head dim D must be a positive multiple of 32 (the block size), got 48"),
    ("D 16, q4_0", (np.ones((1, 3, 16), F16), "q4_0"), {}, ValueError, "x: head dim D must be a positive multiple"),
    ("D 0", (np.ones((2, 0), F32), "q8_0"), {}, ValueError, "x: head dim D must be a positive multiple of 32"),
    ("capacity 0", (np.ones((0, 32), F32), "q8_0"), {}, ValueError, "x: every extent must be > 0"),
    ("unknown format", (np.ones((2, 32), F32), "q5_k"), {}, ValueError,
     "format: must be one of ('q8_0', 'q4_0', 'affine4', 'tq4'), got 'q5_k'"),
    ("format upper case", (np.ones((2, 32), F32), "Q8_0"), {}, ValueError, "format: must be one of"),
    ("affine4 not implemented", (np.ones((2, 32), F32), "affine4"), {}, ValueError,
     "format: 'affine4' is not implemented yet (q8_0, q4_0 and tq4 are)"),
    ("tq4 head dim not a power of two", (np.ones((2, 96), F32), "tq4"), {}, ValueError,
     "x: tq4 needs a head dim D that is a power of two from 32 to 512 (its Hadamard rotation), got 96"),
    ("tq4 head dim too large", (np.ones((2, 1024), F32), "tq4"), {}, ValueError,
     "x: tq4 needs a head dim D that is a power of two from 32 to 512"),
    ("tq4 value too large", (np.full((2, 32), 2.0 ** 51, F32), "tq4"), {}, ValueError,
     "x: every value must be finite with |x| <= 2^50 for tq4"),
    ("format None", (np.ones((2, 32), F32), None), {}, TypeError, "format: expected a str"),
    ("format bytes", (np.ones((2, 32), F32), b"q8_0"), {}, TypeError, "format: expected a str"),
    ("x 1-D", (np.ones(32, F32), "q8_0"), {}, ValueError,
     "x: expected [capacity, D], [H, capacity, D] or [B, H, capacity, D], got shape (32,)"),
    ("x 5-D", (np.ones((1, 1, 1, 2, 32), F32), "q8_0"), {}, ValueError, "x: expected [capacity, D]"),
    ("x float64", (np.ones((2, 32)), "q8_0"), {}, TypeError, "x: dtype must be one of float32, float16, bfloat16"),
    ("x int32", (np.ones((2, 32), np.int32), "q4_0"), {}, TypeError, "x: dtype must be one of"),
    ("x list", ([[1.0] * 32], "q8_0"), {}, TypeError, "x: expected an array, got list"),
    ("x None", (None, "q8_0"), {}, TypeError, "x: expected an array, got NoneType"),
    ("x nan", (_with(np.nan), "q8_0"), {}, ValueError, "x: every value must be finite with |x| <= 65504 * 127"),
    ("x inf", (_with(np.inf), "q4_0"), {}, ValueError, "x: every value must be finite with |x| <= 65504 * 8"),
    ("x -inf f16", (_with(-np.inf).astype(F16), "q8_0"), {}, ValueError, "got -inf at [0, 0, 0, 5]"),
    ("x nan bf16", (_with(np.nan, (1, 31)).astype(BF16), "q4_0"), {}, ValueError, "at [0, 0, 1, 31]"),
    ("x beyond the q8_0 scale", (_with(1e7), "q8_0"), {}, ValueError, "65504 * 127 for q8_0"),
    ("x beyond the q4_0 scale", (_with(-6e5), "q4_0"), {}, ValueError, "65504 * 8 for q4_0"),
    ("huge x, bad format", (huge((BIG, 32)), "q9"), {}, ValueError, "format: must be one of"),
    ("huge x, bad D", (huge((BIG, 40)), "q8_0"), {}, ValueError, "x: head dim D must be a positive multiple"),
    ("huge x, bad dtype", (huge((BIG, 32), np.float64), "q8_0"), {}, TypeError, "x: dtype must be one of"),
]

FROM_BLOCKS_BAD_CALLS = [
    ("blocks int8", (_BLOCKS.view(np.int8), "q8_0"), {"head_dim": 32}, TypeError,
     "blocks: dtype must be uint8 (the raw blocks), got int8"),
    ("blocks float32", (np.zeros((3, 34), F32), "q8_0"), {"head_dim": 32}, TypeError,
     "blocks: dtype must be uint8"),
    ("blocks list", ([[0] * 34], "q8_0"), {"head_dim": 32}, TypeError, "blocks: expected an array, got list"),
    ("blocks 1-D", (np.zeros(34, np.uint8), "q8_0"), {"head_dim": 32}, ValueError,
     "blocks: expected [capacity, bytes_per_row], [H, capacity, bytes_per_row] or [B, H, capacity, "
     "bytes_per_row], got shape (34,)"),
    ("blocks 5-D", (np.zeros((1, 1, 1, 3, 34), np.uint8), "q8_0"), {"head_dim": 32}, ValueError,
     "blocks: expected [capacity, bytes_per_row]"),
    ("blocks too narrow", (np.zeros((3, 33), np.uint8), "q8_0"), {"head_dim": 32}, ValueError,
     "blocks: the last axis must be 34 bytes (a row of 32 elements in q8_0), got 33"),
    ("blocks q8_0 width for q4_0", (_BLOCKS, "q4_0"), {"head_dim": 32}, ValueError,
     "blocks: the last axis must be 18 bytes"),
    ("blocks width for another head_dim", (_BLOCKS, "q8_0"), {"head_dim": 64}, ValueError,
     "blocks: the last axis must be 68 bytes (a row of 64 elements in q8_0), got 34"),
    ("blocks last axis strided", (np.zeros((3, 68), np.uint8)[:, ::2], "q8_0"), {"head_dim": 32}, ValueError,
     "blocks: the last axis (a row's blocks) must be contiguous (stride 1 byte), got stride 2"),
    ("blocks capacity 0", (np.zeros((0, 34), np.uint8), "q8_0"), {"head_dim": 32}, ValueError,
     "blocks: every extent must be > 0"),
    ("head_dim 48", (np.zeros((3, 51), np.uint8), "q8_0"), {"head_dim": 48}, ValueError,
     "head_dim: head dim D must be a positive multiple of 32 (the block size), got 48"),
    ("head_dim 0", (_BLOCKS, "q8_0"), {"head_dim": 0}, ValueError, "head_dim: head dim D must be a positive"),
    ("head_dim negative", (_BLOCKS, "q8_0"), {"head_dim": -32}, ValueError, "head_dim: head dim D must be"),
    ("head_dim float", (_BLOCKS, "q8_0"), {"head_dim": 32.0}, TypeError, "head_dim: expected an integer"),
    ("head_dim bool", (_BLOCKS, "q8_0"), {"head_dim": True}, TypeError, "head_dim: expected an integer, got bool"),
    ("head_dim beyond int64", (_BLOCKS, "q8_0"), {"head_dim": 2 ** 70}, ValueError, "head_dim: "),
    ("head_dim whose row bytes overflow", (_BLOCKS, "q8_0"), {"head_dim": 2 ** 63 - 32}, ValueError,
     "head_dim: head dim D = 9223372036854775776 makes a row's bytes overflow 64 bits"),
    ("head_dim missing", (_BLOCKS, "q8_0"), {}, TypeError, "head_dim"),
    ("unknown format", (_BLOCKS, "q8"), {"head_dim": 32}, ValueError, "format: must be one of"),
    ("affine4 not implemented", (_BLOCKS, "affine4"), {"head_dim": 32}, ValueError,
     "format: 'affine4' is not implemented yet"),
    ("format int", (_BLOCKS, 8), {"head_dim": 32}, TypeError, "format: expected a str"),
]


class Quantized:
    """A quantized cache as the decode takes it (fattn.QuantizedCache's attributes)."""

    def __init__(self, blocks, fmt="q8_0", head_dim=64):
        self.blocks, self.format, self.head_dim = blocks, fmt, head_dim

    def __repr__(self):
        return f"Quantized({self.format}, {getattr(self.blocks, 'shape', None)}, D={self.head_dim})"


def quant(shape=(2, 10, 68), fmt="q8_0", head_dim=64, dtype=np.uint8):
    return Quantized(np.zeros(shape, dtype), fmt, head_dim)


Q64 = np.ones((4, 64), F32)
VEC_QUANT_BAD_CALLS = [
    ("quant capacity < kv_seq_len", (Q64, quant(), quant()), {"kv_seq_len": 11}, ValueError,
     "kv_seq_len: must be <= the capacity of k_cache and v_cache (10), got 11"),
    ("quant row bytes", (Q64, quant((2, 10, 66)), np.ones((2, 10, 64), F16)), {"kv_seq_len": 5}, ValueError,
     "k_cache: a q8_0 row of D = 64 elements is 68 bytes, got blocks of 66 bytes per row"),
    ("quant q4_0 row bytes", (Q64, np.ones((2, 10, 64), F16), quant((2, 10, 68), "q4_0")), {"kv_seq_len": 5},
     ValueError, "v_cache: a q4_0 row of D = 64 elements is 36 bytes, got blocks of 68"),
    ("quant blocks float32", (Q64, quant(dtype=F32), quant()), {"kv_seq_len": 5}, TypeError,
     "k_cache: a quantized cache's blocks must be uint8, got float32"),
    ("quant blocks int8", (Q64, quant(), quant(dtype=np.int8)), {"kv_seq_len": 5}, TypeError,
     "v_cache: a quantized cache's blocks must be uint8, got int8"),
    ("quant blocks not an array", (Q64, Quantized("blocks"), quant()), {"kv_seq_len": 5}, TypeError,
     "k_cache: expected an array, got str"),
    ("quant unknown format", (Q64, quant(fmt="q5_1"), quant()), {"kv_seq_len": 5}, ValueError,
     "k_cache: must be one of ('q8_0', 'q4_0', 'affine4', 'tq4'), got 'q5_1'"),
    ("quant affine4", (Q64, quant(), quant(fmt="affine4")), {"kv_seq_len": 5}, ValueError,
     "v_cache: quantized format 'affine4' is not implemented"),
    ("quant format not str", (Q64, quant(fmt=8), quant()), {"kv_seq_len": 5}, TypeError,
     "k_cache: a quantized cache's format must be a str"),
    ("quant head_dim float", (Q64, quant(head_dim=64.0), quant()), {"kv_seq_len": 5}, TypeError,
     "k_cache: head_dim: expected an integer"),
    ("quant D 48", (np.ones((4, 48), F32), quant((2, 10, 51), head_dim=48), quant((2, 10, 51), head_dim=48)),
     {"kv_seq_len": 5}, ValueError,
     "k_cache: a quantized cache's head dim D must be a positive multiple of 32 (its block size), got 48"),
    ("quant D mismatch", (Q64, quant((2, 10, 34), head_dim=32), quant((2, 10, 34), head_dim=32)),
     {"kv_seq_len": 5}, ValueError, "k_cache: head dim D (q's) must be 64, got 32"),
    ("quant heads differ", (Q64, quant(), quant((4, 10, 68))), {"kv_seq_len": 5}, ValueError,
     "v_cache: shape must equal k_cache's [1, 2, 10, 64], got [1, 4, 10, 64]"),
    ("quant capacity differs", (Q64, quant(), np.ones((2, 9, 64), F16)), {"kv_seq_len": 5}, ValueError,
     "v_cache: shape must equal k_cache's [1, 2, 10, 64], got [1, 2, 9, 64]"),
    ("quant H % H_kv", (np.ones((3, 64), F32), quant(), quant()), {"kv_seq_len": 5}, ValueError,
     "H (3) must be divisible by the number of K/V heads H_kv (2)"),
    ("quant rank", (Q64, quant((1, 2, 10, 68)), quant()), {"kv_seq_len": 5}, ValueError,
     "k_cache: expected blocks [H_kv, capacity, bytes per row] to go with q of shape (4, 64)"),
    ("quant batch mismatch", (np.ones((2, 4, 64), F32), quant((1, 2, 10, 68)), quant((1, 2, 10, 68))),
     {"kv_seq_len": 5}, ValueError, "k_cache: batch size B (q's) must be 2, got 1"),
    ("quant zero capacity", (Q64, quant((2, 0, 68)), quant((2, 0, 68))), {"kv_seq_len": 1}, ValueError,
     "k_cache: every extent must be > 0"),
    ("quant ring_start", (Q64, quant(), quant()), {"kv_seq_len": 5, "ring_start": 10}, ValueError,
     "ring_start: must be from 0 to capacity - 1 (9), got 10"),
]


def packed(total_q=5, total_k=7, h=4, h_kv=2, d=8, dtype=F32, k_dtype=None, v_shape=None):
    """q [total_q, H, D], k, v [total_k, H_kv, D] for flash_attn_varlen."""
    return (np.ones((total_q, h, d), dtype), np.ones((total_k, h_kv, d), k_dtype or dtype),
            np.ones(v_shape or (total_k, h_kv, d), dtype))


def cu(*offsets, dtype=np.int32):
    return np.array(offsets, dtype=dtype)


CU_Q, CU_K = cu(0, 2, 5), cu(0, 3, 7)
VARLEN_BAD_CALLS = [
    ("cu_seqlens_q not from 0", packed() + (cu(3, 4, 5), CU_K), {}, ValueError, "cu_seqlens_q: must start at 0, got 3"),
    ("cu_seqlens_k decreasing", packed() + (CU_Q, cu(0, 5, 3, dtype=np.int64)[[0, 1, 2]]), {}, ValueError,
     "cu_seqlens_k: must be non-decreasing, got 5 then 3 at index 2"),
    ("cu_seqlens_q negative", packed() + (cu(0, -1, 5), CU_K), {}, ValueError,
     "cu_seqlens_q: must be non-decreasing, got 0 then -1 at index 1"),
    ("cu_seqlens_q past total_q", packed() + (cu(0, 2, 6), CU_K), {}, ValueError,
     "cu_seqlens_q: the last entry must equal the packed rows (total_q = 5), got 6"),
    ("cu_seqlens_k short of total_k", packed() + (CU_Q, cu(0, 3, 6)), {}, ValueError,
     "cu_seqlens_k: the last entry must equal the packed rows (total_k = 7), got 6"),
    ("cu_seqlens_q float", packed() + (CU_Q.astype(F32), CU_K), {}, TypeError,
     "cu_seqlens_q: dtype must be int32 or int64, got float32"),
    ("cu_seqlens_k uint64", packed() + (CU_Q, CU_K.astype(np.uint64)), {}, TypeError,
     "cu_seqlens_k: dtype must be int32 or int64, got uint64"),
    ("cu_seqlens_q int16", packed() + (CU_Q.astype(np.int16), CU_K), {}, TypeError,
     "cu_seqlens_q: dtype must be int32 or int64, got int16"),
    ("cu_seqlens_q 2-D", packed() + (CU_Q[None], CU_K), {}, ValueError,
     "cu_seqlens_q: expected a 1-D array [B + 1], got shape (1, 3)"),
    ("cu_seqlens_k empty", packed(total_q=0, total_k=0) + (cu(0), cu()), {}, ValueError,
     "cu_seqlens_k: must have as many entries as cu_seqlens_q (B + 1 = 1), got 0"),
    ("cu_seqlens_q empty", packed(total_q=0, total_k=0) + (cu(), cu()), {}, ValueError,
     "cu_seqlens_q: must have B + 1 >= 1 entries, got 0"),
    ("cu_seqlens B differs", packed() + (CU_Q, cu(0, 3, 7, 7)), {}, ValueError,
     "cu_seqlens_k: must have as many entries as cu_seqlens_q (B + 1 = 3), got 4"),
    ("cu_seqlens_q a list", packed() + ([0, 2, 5], CU_K), {}, TypeError, "cu_seqlens_q: expected an array, got list"),
    ("sequence over 2^30 rows", (huge((BIG, 4, 8)), huge((1, 2, 8)), huge((1, 2, 8)), cu(0, BIG, dtype=np.int64),
                                 cu(0, 1)), {}, ValueError,
     "cu_seqlens_q: sequence 0 has 4294967299 rows, more than 2^30 (1073741824)"),
    ("q 4-D", (np.ones((1, 5, 4, 8), F32),) + packed()[1:] + (CU_Q, CU_K), {}, ValueError,
     "q: expected a 3-D array [total_q, H, D], got shape (1, 5, 4, 8)"),
    ("v 2-D", packed()[:2] + (np.ones((7, 8), F32), CU_Q, CU_K), {}, ValueError,
     "v: expected a 3-D array [total_k, H_kv, D], got shape (7, 8)"),
    ("k dtype differs", packed(k_dtype=BF16) + (CU_Q, CU_K), {}, TypeError,
     "k: dtype must match q (float32), got bfloat16"),
    ("q int", packed(dtype=np.int32) + (CU_Q, CU_K), {}, TypeError, "q: dtype must be one of float32, float16, bfloat16"),
    ("D differs", packed()[:1] + (np.ones((7, 2, 16), F32), np.ones((7, 2, 16), F32), CU_Q, CU_K), {}, ValueError,
     "k: head dim D (q.shape[2]) must be 8, got 16"),
    ("v shape differs", packed(v_shape=(6, 2, 8)) + (CU_Q, CU_K), {}, ValueError,
     "v: shape must equal k's (total_k, H_kv, D) = (7, 2, 8), got (6, 2, 8)"),
    ("H % H_kv", packed(h=3) + (CU_Q, CU_K), {}, ValueError,
     "H (3) must be divisible by the number of K/V heads H_kv (2)"),
    ("zero heads", packed(h=0) + (CU_Q, CU_K), {}, ValueError, "q: every extent must be > 0, got H = 0"),
    ("llamacpp D", packed() + (CU_Q, CU_K), {"kernel": "llamacpp"}, ValueError,
     "q: head dim D must be 512 for kernel='llamacpp', got 8"),
    ("unknown kernel", packed() + (CU_Q, CU_K), {"kernel": "flash"}, ValueError, "kernel: must be one of"),
    ("window 0", packed() + (CU_Q, CU_K), {"window": 0}, ValueError, "window: must be an int >= 1"),
    ("softcap negative", packed() + (CU_Q, CU_K), {"softcap": -1.0}, ValueError, "softcap: must be finite and >= 0"),
    ("sinks length", packed() + (CU_Q, CU_K), {"sinks": np.zeros(3, F32)}, ValueError,
     "sinks: expected one per query head (length H = 4), got length 3"),
    ("causal unknown", packed() + (CU_Q, CU_K), {"causal": "diagonal"}, TypeError, "causal: expected a bool"),
    ("out shape", packed() + (CU_Q, CU_K), {"out": np.zeros((5, 4, 4), F32)}, ValueError,
     "out: shape must be (5, 4, 8), got (5, 4, 4)"),
    ("out dtype", packed() + (CU_Q, CU_K), {"out": np.zeros((5, 4, 8), F16)}, TypeError, "out: dtype must be float32"),
    ("out read-only", packed() + (CU_Q, CU_K), {"out": read_only((5, 4, 8))}, ValueError, "out: must be writable"),
]


# Every table, with the function it calls: one test, one row per bad call.
BAD_CALLS = ([(fattn.sdpa,) + row for row in SDPA_BAD_CALLS]
             + [(fattn.flash_attn_prefill,) + row for row in PREFILL_BAD_CALLS]
             + [(fattn.flash_attn_prefill_blk,) + row for row in BLK_BAD_CALLS]
             + [(fattn.flash_attn_varlen,) + row for row in VARLEN_BAD_CALLS]
             + [(fattn.flash_attn_vec,) + row for row in VEC_BAD_CALLS]
             + [(fattn.flash_attn_vec,) + row for row in VEC_OUT_BAD_CALLS]
             + [(fattn.flash_attn_vec_partials,) + row for row in VEC_BAD_CALLS]
             + [(fattn.flash_attn_vec,) + row for row in VEC_QUANT_BAD_CALLS]
             + [(fattn.flash_attn_vec_partials,) + row for row in VEC_QUANT_BAD_CALLS]
             + [(fattn.flash_attn_vec_reduce,) + row for row in REDUCE_BAD_CALLS]
             + [(fattn.merge_attention,) + row for row in MERGE_BAD_CALLS]
             + [(fattn.round_to,) + row for row in ROUND_BAD_CALLS]
             + [(fattn.quantize_kv,) + row for row in QUANTIZE_BAD_CALLS]
             + [(fattn.QuantizedCache.from_blocks,) + row for row in FROM_BLOCKS_BAD_CALLS])


@pytest.mark.parametrize("fn, args, kwargs, exc, fragment", [(c[0],) + c[2:] for c in BAD_CALLS],
                         ids=[f"{c[0].__name__}-{c[1]}" for c in BAD_CALLS])
def test_bad_call_raises_naming_the_argument(fn, args, kwargs, exc, fragment):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert fragment in message
    assert names_an_argument(fn, message), message


def names_an_argument(fn, message):
    """The message starts with "<argument>: " for one of fn's parameters (an element such as
    outputs[1] counts as its sequence; "q/k" names both), or is Python's own message about a
    missing argument, which quotes its name."""
    params = set(inspect.signature(fn).parameters)
    if "missing 1 required" in message:
        return any(f"'{p}'" in message for p in params)
    head = message.split(": ", 1)[0]
    names = re.split(r"[/,] ?", head)
    return all(re.sub(r"\[\d+\]$", "", n) in params for n in names)


def test_every_public_function_has_rows():
    called = {row[0].__name__ for row in BAD_CALLS}
    assert called >= {"sdpa", "flash_attn_prefill", "flash_attn_prefill_blk", "flash_attn_varlen", "flash_attn_vec",
                      "flash_attn_vec_partials", "flash_attn_vec_reduce", "merge_attention", "round_to",
                      "quantize_kv", "from_blocks"}


def test_huge_zero_stride_cache_with_a_short_kv_seq_len_runs():
    """Valid calls with extents beyond 32 bits: only kv_seq_len positions are read."""
    q = np.ones((4, 64), F32)
    k, v = huge((2, BIG, 64), F16), huge((2, BIG, 64), F16)
    np.testing.assert_array_equal(fattn.flash_attn_vec(q, k, v, kv_seq_len=40), np.ones((4, 64), F32))
    qs = np.ones((1, 4, 3, 8), F32)
    ks = huge((1, 2, BIG, 8))
    np.testing.assert_array_equal(fattn.sdpa(qs, ks, ks, kv_seq_len=5), np.ones((1, 4, 3, 8), F32))
