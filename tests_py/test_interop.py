"""Array interop: inputs read in place from the buffer protocol and DLPack (CPU torch tensors,
bf16 included), misaligned inputs, and ``out=`` (written in place, checked)."""
import array

import numpy as np
import pytest

import fattn
from helpers import BF16, DTYPES, F16, F32


def bits(a):
    a = np.asarray(a)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[a.itemsize])


def same_bits(a, b):
    return np.array_equal(bits(a), bits(b))


def misaligned(a):
    """A copy of `a` whose data pointer is one byte off the element alignment."""
    raw = np.zeros(a.nbytes + a.itemsize + 1, np.uint8)
    start = (-raw.ctypes.data) % 16 + 1
    view = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    view[...] = a
    assert not view.flags.aligned or a.itemsize == 1  # bytes are always aligned
    return view


def prefill_inputs(rng, dtype, q=(1, 4, 40, 64), kv=(1, 2, 40, 64)):
    return [rng.standard_normal(s).astype(dtype) for s in (q, kv, kv)]


def decode_inputs(rng, dtype, heads=4, kv_heads=2, cap=70, d=64):
    return (rng.standard_normal((heads, d)).astype(F32),
            rng.standard_normal((kv_heads, cap, d)).astype(dtype),
            rng.standard_normal((kv_heads, cap, d)).astype(dtype))


# Every kernel as (name, call(convert)): `convert` maps each numpy input to another array object.
def kernels(rng, dtype):
    q, k, v = prefill_inputs(rng, dtype)
    mask = rng.standard_normal((40, 40)).astype(F32)
    mask[:, 16:32] = -np.inf
    blk = fattn.flash_attn_prefill_blk(mask, head_dim=64)
    qd, kd, vd = decode_inputs(rng, dtype)
    o, s, m = fattn.flash_attn_vec_partials(qd, kd, vd, kv_seq_len=50, nwg=4)
    out1, lse1 = fattn.flash_attn_prefill(q, k, v, return_lse=True)
    out2, lse2 = fattn.flash_attn_prefill(q, k[:, :, ::-1], v, return_lse=True)
    qp, kp, vp = (np.ascontiguousarray(x[0].transpose(1, 0, 2)) for x in (q, k, v))  # packed [total, H, D]
    cu_q, cu_k = np.array([0, 15, 40], np.int32), np.array([0, 25, 40], np.int32)
    return {
        "sdpa": lambda c: fattn.sdpa(c(q), c(k), c(v)),
        "flash_attn_prefill": lambda c: fattn.flash_attn_prefill(c(q), c(k), c(v), c(mask)),
        "flash_attn_prefill_with_blk": lambda c: fattn.flash_attn_prefill(c(q), c(k), c(v), c(mask), blk=c(blk)),
        "flash_attn_prefill_blk": lambda c: fattn.flash_attn_prefill_blk(c(mask), head_dim=64),
        "flash_attn_varlen": lambda c: fattn.flash_attn_varlen(c(qp), c(kp), c(vp), c(cu_q), c(cu_k), causal=True),
        "flash_attn_vec": lambda c: fattn.flash_attn_vec(c(qd), c(kd), c(vd), kv_seq_len=50, nwg=4),
        "flash_attn_vec_partials": lambda c: fattn.flash_attn_vec_partials(c(qd), c(kd), c(vd), kv_seq_len=50,
                                                                            nwg=4),
        "flash_attn_vec_reduce": lambda c: fattn.flash_attn_vec_reduce(c(o), c(s), c(m)),
        "merge_attention": lambda c: fattn.merge_attention([c(out1), c(out2)], [c(lse1), c(lse2)]),
        "round_to": lambda c: fattn.round_to(c(q), F16 if dtype != F16 else BF16),
    }


KERNELS = list(kernels(np.random.default_rng(0), F32))


def results_equal(a, b):
    if isinstance(a, tuple):
        return all(results_equal(x, y) for x, y in zip(a, b))
    return same_bits(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", KERNELS)
def test_misaligned_inputs_give_the_aligned_bits(rng, name, dtype):
    call = kernels(rng, dtype)[name]
    assert results_equal(call(misaligned), call(lambda a: a))


@pytest.mark.parametrize("name", KERNELS)
def test_memoryview_inputs(rng, name):
    call = kernels(rng, F32)[name]
    assert results_equal(call(memoryview), call(lambda a: a))


def test_buffer_protocol_is_read_in_place():
    from fattn._common import as_array
    buf = array.array("f", range(8))
    a = as_array(buf, "x")
    assert a.dtype == F32 and a.shape == (8,)
    buf[3] = 42.0
    assert a[3] == 42.0
    m = memoryview(np.zeros((2, 3), F16))
    assert np.shares_memory(as_array(m, "x"), np.asarray(m))


@pytest.mark.parametrize("obj", [[1.0, 2.0], 1.0, 3, None, "abc", np.float32(1.0), {"a": 1}, object()],
                         ids=lambda o: type(o).__name__)
def test_non_arrays_are_type_errors_naming_the_argument(obj):
    q = np.ones((1, 2, 3, 8), F32)
    with pytest.raises(TypeError, match=r"^k: expected an array, got"):
        fattn.sdpa(q, obj, q)


# --- torch ------------------------------------------------------------------------------------

def torch_mod():
    return pytest.importorskip("torch")


TORCH_DTYPES = {F32: "float32", F16: "float16", BF16: "bfloat16"}


def to_torch(a):
    torch = torch_mod()
    a = np.ascontiguousarray(a)
    if a.dtype == BF16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    if a.dtype == np.bool_:
        return torch.from_numpy(a.copy())
    return torch.from_numpy(a.copy())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_tensors_are_read_without_copying(dtype):
    torch = torch_mod()
    from fattn._common import as_array
    t = torch.randn(2, 3, 5, 8).to(getattr(torch, TORCH_DTYPES[dtype]))
    a = as_array(t, "q")
    assert a.dtype == dtype and a.shape == (2, 3, 5, 8)
    assert a.ctypes.data == t.data_ptr()
    # A strided (transposed, offset) tensor: the same memory, its strides.
    s = t[:, 1:].transpose(1, 2)
    b = as_array(s, "q")
    assert b.ctypes.data == s.data_ptr()
    assert b.strides == tuple(st * s.element_size() for st in s.stride())
    # The view keeps the tensor's memory alive after the tensor itself is gone.
    expect = bits(a).copy()
    del t, s
    assert np.array_equal(bits(a), expect)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", KERNELS)
def test_torch_inputs_give_the_numpy_bits(rng, name, dtype):
    torch_mod()
    call = kernels(rng, dtype)[name]
    assert results_equal(call(to_torch), call(lambda a: a))


def test_torch_tensor_requiring_grad_is_a_type_error():
    torch = torch_mod()
    q = torch.ones(1, 2, 3, 8, requires_grad=True)
    with pytest.raises(TypeError, match=r"^q: could not be read through __dlpack__"):
        fattn.sdpa(q, q.detach(), q.detach())


def test_torch_unsupported_dtype_names_the_argument():
    torch = torch_mod()
    q = torch.ones(1, 2, 3, 8, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"^q: dtype must be one of"):
        fattn.sdpa(q, q, q)
    c = torch.ones(1, 2, 3, 8, dtype=torch.complex64)
    with pytest.raises(TypeError, match=r"^k: "):
        fattn.sdpa(q.float(), c, q.float())


def test_torch_out_is_written_in_place(rng):
    torch = torch_mod()
    q, k, v = prefill_inputs(rng, BF16)
    expect = fattn.flash_attn_prefill(q, k, v)
    out = torch.empty(q.shape, dtype=torch.bfloat16)
    got = fattn.flash_attn_prefill(to_torch(q), to_torch(k), to_torch(v), out=out)
    assert got is out  # the caller's own tensor comes back, as with a numpy out
    assert same_bits(out.view(torch.int16).numpy(), expect)
    got, lse = fattn.flash_attn_prefill(to_torch(q), to_torch(k), to_torch(v), out=out, return_lse=True)
    assert got is out and isinstance(lse, np.ndarray)


# --- out= -------------------------------------------------------------------------------------

def out_cases(rng, dtype):
    """(name, call(out=...), expected result without out)."""
    q, k, v = prefill_inputs(rng, dtype)
    qd, kd, vd = decode_inputs(rng, dtype)
    o, s, m = fattn.flash_attn_vec_partials(qd, kd, vd, kv_seq_len=50, nwg=4)
    out1, lse1 = fattn.flash_attn_prefill(q, k, v, return_lse=True)
    out2, lse2 = fattn.flash_attn_prefill(q, k[:, :, ::-1], v, return_lse=True)
    qb = np.ascontiguousarray(q.transpose(0, 2, 1, 3))
    kb, vb = (np.ascontiguousarray(a.transpose(0, 2, 1, 3)) for a in (k, v))
    calls = {
        "sdpa": lambda **kw: fattn.sdpa(q, k, v, **kw),
        "flash_attn_prefill": lambda **kw: fattn.flash_attn_prefill(q, k, v, causal=True, **kw),
        "flash_attn_prefill_blhd": lambda **kw: fattn.flash_attn_prefill(qb, kb, vb, layout="blhd", **kw),
        "flash_attn_vec": lambda **kw: fattn.flash_attn_vec(qd, kd, vd, kv_seq_len=50, nwg=4, **kw),
        "flash_attn_vec_reduce": lambda **kw: fattn.flash_attn_vec_reduce(o, s, m, **kw),
        "merge_attention": lambda **kw: fattn.merge_attention([out1, out2], [lse1, lse2], **kw),
    }
    return calls


OUT_KERNELS = list(out_cases(np.random.default_rng(0), F32))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", OUT_KERNELS)
def test_out_is_written_and_returned(rng, name, dtype):
    call = out_cases(rng, dtype)[name]
    expect = call()
    out = np.full_like(expect, np.nan)
    got = call(out=out)
    assert got is out
    assert same_bits(out, expect)


@pytest.mark.parametrize("name", OUT_KERNELS)
def test_torch_out_comes_back_as_itself(rng, name):
    torch = torch_mod()
    call = out_cases(rng, F32)[name]
    expect = call()
    out = torch.full(expect.shape, float("nan"), dtype=torch.float32)
    got = call(out=out)
    assert got is out
    assert same_bits(out.numpy(), expect)


@pytest.mark.parametrize("name", OUT_KERNELS)
@pytest.mark.parametrize("kind", ["misaligned", "strided", "reversed", "fortran"])
def test_awkward_out_is_written_correctly(rng, name, kind):
    call = out_cases(rng, BF16 if name != "merge_attention" else F32)[name]
    expect = call()
    if kind == "misaligned":
        out = misaligned(np.zeros_like(expect))
    elif kind == "strided":  # every other element along the last axis
        out = np.zeros(expect.shape[:-1] + (2 * expect.shape[-1],), expect.dtype)[..., ::2]
    elif kind == "reversed":
        out = np.zeros_like(expect)[..., ::-1]
    else:
        out = np.asfortranarray(np.zeros_like(expect))
    got = call(out=out)
    assert got is out
    assert same_bits(out, expect)


def test_out_with_return_lse(rng):
    q, k, v = prefill_inputs(rng, F16)
    expect, expect_lse = fattn.flash_attn_prefill(q, k, v, return_lse=True)
    out = np.empty_like(expect)
    got, lse = fattn.flash_attn_prefill(q, k, v, return_lse=True, out=out)
    assert got is out and same_bits(out, expect) and same_bits(lse, expect_lse)


@pytest.mark.parametrize("name", OUT_KERNELS)
def test_bad_out_is_rejected_naming_out(rng, name):
    call = out_cases(rng, F32)[name]
    expect = call()
    with pytest.raises(TypeError, match=r"^out: dtype must be"):
        call(out=np.empty(expect.shape, np.float64))
    with pytest.raises(ValueError, match=r"^out: shape must be"):
        call(out=np.empty(expect.shape + (1,), expect.dtype))
    ro = np.empty_like(expect)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"^out: must be writable"):
        call(out=ro)
    with pytest.raises(ValueError, match=r"^out: must not overlap itself"):
        call(out=np.lib.stride_tricks.as_strided(np.empty(expect.shape[-1], expect.dtype), expect.shape,
                                                 (0,) * (expect.ndim - 1) + (expect.itemsize,), writeable=True))
    with pytest.raises(TypeError, match=r"^out: expected an array, got list"):
        call(out=expect.tolist())


def test_out_overlapping_an_input_is_rejected(rng):
    q, k, v = prefill_inputs(rng, F32)
    with pytest.raises(ValueError, match=r"^out: must not overlap the input q"):
        fattn.sdpa(q, k, v, out=q)
    qd, kd, vd = decode_inputs(rng, F32)
    with pytest.raises(ValueError, match=r"^out: must not overlap the input q"):
        fattn.flash_attn_vec(qd, kd, vd, kv_seq_len=5, out=qd)


# --- DLPack without torch: NumPy's own exporter behind an object that has only __dlpack__ ----

class DLPackOnly:
    """Exposes nothing but ``__dlpack__`` (legacy capsule, or a versioned one)."""

    def __init__(self, a, versioned=False):
        self.a, self.versioned = a, versioned

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(max_version=(1, 0)) if self.versioned else self.a.__dlpack__()

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


@pytest.mark.parametrize("versioned", [False, True], ids=["legacy", "versioned"])
@pytest.mark.parametrize("dtype", [F32, F16], ids=str)
def test_dlpack_capsules_are_read_in_place(rng, dtype, versioned):
    from fattn._common import as_array
    a = rng.standard_normal((2, 3, 4, 8)).astype(dtype)[:, ::2].transpose(0, 2, 1, 3)
    view = as_array(DLPackOnly(a, versioned), "q")
    assert view.dtype == dtype and view.shape == a.shape and view.strides == a.strides
    assert view.ctypes.data == a.ctypes.data and np.shares_memory(view, a)
    q, k, v = prefill_inputs(rng, dtype)
    wrap = lambda x: DLPackOnly(x, versioned)  # noqa: E731
    assert same_bits(fattn.flash_attn_prefill(wrap(q), wrap(k), wrap(v)), fattn.flash_attn_prefill(q, k, v))


def test_read_only_versioned_capsule_gives_a_read_only_view():
    from fattn._common import as_array
    a = np.zeros((2, 8), F32)
    a.flags.writeable = False
    view = as_array(DLPackOnly(a, versioned=True), "out")
    assert not view.flags.writeable
    with pytest.raises(ValueError, match=r"^out: must be writable"):
        fattn.flash_attn_vec_reduce(np.zeros((2, 1, 8), F32), np.ones((2, 1), F32), np.zeros((2, 1), F32),
                                    out=DLPackOnly(a, versioned=True))


def test_consumed_capsule_is_rejected():
    from fattn._common import as_array
    capsule = np.zeros(4, F32).__dlpack__()
    as_array(type("Once", (), {"__dlpack__": lambda self: capsule})(), "q")
    with pytest.raises(TypeError, match=r"^q: __dlpack__\(\) did not return an unconsumed DLPack capsule"):
        as_array(type("Twice", (), {"__dlpack__": lambda self: capsule})(), "q")


def test_typecheck_usage_script_runs():
    """tests_py/typecheck_usage.py is what `make typecheck` checks as a user's code; it must run too."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "typecheck_usage.py")
    spec = importlib.util.spec_from_file_location("typecheck_usage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = (fattn.get_num_threads(), fattn.build_info()["isa"])
    try:
        module.main()
    finally:
        fattn.set_num_threads(saved[0])
        fattn.set_isa(saved[1])
