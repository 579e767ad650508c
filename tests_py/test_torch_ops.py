"""torch.ops.fattn.* (fattn.integrations.torch): each op is its kernel bit for bit, traces under
torch.compile(fullgraph=True) and torch.export through its fake implementation, and refuses a
backward. Skipped without torch (`make test-interop` installs it)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fattn  # noqa: E402
import fattn.integrations.torch as fattn_torch  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def bits(t):
    t = t.contiguous()
    return t.view({4: torch.int32, 2: torch.int16, 1: torch.uint8}[t.element_size()])


def same_bits(a, b):
    b = torch.from_numpy(np.ascontiguousarray(b).view({4: np.int32, 2: np.int16, 1: np.uint8}[b.itemsize])) \
        if isinstance(b, np.ndarray) else bits(b)
    return torch.equal(bits(a), b)


def randn(g, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=g).to(dtype)


@pytest.fixture
def g():
    return torch.Generator().manual_seed(20261207)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_prefill_op_is_the_kernel(g, dtype):
    q, k, v = randn(g, 2, 4, 37, 64, dtype=dtype), randn(g, 2, 2, 50, 64, dtype=dtype), randn(g, 2, 2, 50, 64, dtype=dtype)
    mask = torch.rand(2, 1, 37, 50, generator=g) > 0.2
    sinks = randn(g, 4)
    ops = torch.ops.fattn
    cases = [
        (ops.flash_attn_prefill(q, k, v), fattn.flash_attn_prefill(q, k, v)),
        (ops.flash_attn_prefill(q, k, v, mask, "bottom_right", 0.2, 5.0, None, sinks),
         fattn.flash_attn_prefill(q, k, v, mask, causal="bottom_right", scale=0.2, softcap=5.0, sinks=sinks.numpy())),
        (ops.flash_attn_prefill(q, k, v, causal="top_left", window=9, q_offset=13),
         fattn.flash_attn_prefill(q, k, v, causal=True, window=9, q_offset=13)),
        (ops.flash_attn_prefill(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), layout="blhd"),
         fattn.flash_attn_prefill(q, k, v).transpose(0, 2, 1, 3)),
    ]
    blk = ops.flash_attn_prefill_blk(mask, 64)
    assert blk.dtype == torch.uint8 and np.array_equal(blk.numpy(), fattn.flash_attn_prefill_blk(mask, head_dim=64))
    cases.append((ops.flash_attn_prefill(q, k, v, mask, blk=blk), fattn.flash_attn_prefill(q, k, v, mask)))
    for got, want in cases:
        assert isinstance(got, torch.Tensor) and got.dtype == dtype and got.is_contiguous()
        assert same_bits(got, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_vec_op_is_the_kernel(g, dtype):
    q = randn(g, 3, 8, 128)
    k, v = randn(g, 3, 2, 100, 128, dtype=dtype), randn(g, 3, 2, 100, 128, dtype=dtype)
    sinks = randn(g, 8)
    got = torch.ops.fattn.flash_attn_vec(q, k, v, 77)
    assert got.dtype == torch.float32 and got.shape == q.shape
    assert same_bits(got, fattn.flash_attn_vec(q, k, v, kv_seq_len=77))
    got = torch.ops.fattn.flash_attn_vec(q, k, v, 90, scale=0.05, mask="sliding_window", window=20, softcap=4.0,
                                         sinks=sinks, ring_start=7)
    assert same_bits(got, fattn.flash_attn_vec(q, k, v, kv_seq_len=90, scale=0.05, mask="sliding_window", window=20,
                                               softcap=4.0, sinks=sinks.numpy(), ring_start=7))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sdpa_op_is_the_kernel(g, dtype):
    q, k, v = randn(g, 1, 4, 10, 32, dtype=dtype), randn(g, 1, 1, 30, 32, dtype=dtype), randn(g, 1, 1, 30, 32, dtype=dtype)
    assert same_bits(torch.ops.fattn.sdpa(q, k, v), fattn.sdpa(q, k, v))
    sinks = randn(g, 4)
    assert same_bits(torch.ops.fattn.sdpa(q, k, v, "top_left", None, 25, sinks, 2.0, 6),
                     fattn.sdpa(q, k, v, causal="top_left", kv_seq_len=25, sinks=sinks.numpy(), softcap=2.0, window=6))
    assert same_bits(torch.ops.fattn.sdpa(q, k, v, causal="none"), fattn.sdpa(q, k, v, causal=False))


def test_bad_arguments_raise_the_kernels_errors(g):
    q = randn(g, 1, 4, 8, 32)
    with pytest.raises(ValueError, match="causal"):
        torch.ops.fattn.flash_attn_prefill(q, q, q, causal="yes")
    with pytest.raises(ValueError, match="H_kv|heads"):
        torch.ops.fattn.flash_attn_prefill(q, q[:, :3], q[:, :3])
    with pytest.raises(TypeError, match="dtype"):
        torch.ops.fattn.flash_attn_prefill(q.double(), q.double(), q.double())


def test_inputs_that_require_grad_run_forward_and_refuse_backward(g):
    q = randn(g, 1, 2, 8, 32).requires_grad_()
    k, v = randn(g, 1, 2, 8, 32), randn(g, 1, 2, 8, 32)
    out = torch.ops.fattn.flash_attn_prefill(q, k, v, causal="top_left")
    assert same_bits(out.detach(), fattn.flash_attn_prefill(q.detach(), k, v, causal=True))
    with pytest.raises(RuntimeError, match="no backward"):
        out.sum().backward()


def test_fake_implementations_give_the_outputs_shape_and_dtype():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        q = torch.empty(2, 8, 100, 64, dtype=torch.bfloat16)
        kv = torch.empty(2, 2, 300, 64, dtype=torch.bfloat16)
        mask = torch.empty(2, 1, 100, 300, dtype=torch.bool)
        out = torch.ops.fattn.flash_attn_prefill(q, kv, kv, mask, causal="bottom_right")
        assert out.shape == q.shape and out.dtype == q.dtype
        blk = torch.ops.fattn.flash_attn_prefill_blk(mask, 64)
        bq, bk = fattn.prefill_geometry(64)
        assert blk.shape == (-(-100 // bq), -(-300 // bk)) and blk.dtype == torch.uint8
        qd = torch.empty(2, 8, 64)
        out = torch.ops.fattn.flash_attn_vec(qd, kv, kv, 200)
        assert out.shape == qd.shape and out.dtype == torch.float32
        out = torch.ops.fattn.sdpa(q, kv, kv)
        assert out.shape == q.shape and out.dtype == q.dtype


def every_op(q, k, v, mask, sinks):
    """A function calling each op, with torch operations feeding them (the ops' outputs are returned
    as they are: arithmetic on them would be the compiler's, fused and rounded its own way)."""
    ops = torch.ops.fattn
    a = ops.flash_attn_prefill(q, k, v, causal="top_left", window=16, softcap=10.0, sinks=sinks)
    b = ops.flash_attn_prefill(q * 0.5, k, v, mask, blk=ops.flash_attn_prefill_blk(mask, q.shape[-1]))
    c = ops.sdpa(q, k, v, kv_seq_len=k.shape[2] - 3)
    d = ops.flash_attn_vec(q[:, :, -1].float(), k, v, k.shape[2] - 1, mask="sliding_window", window=8)
    return a, b, c, d


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_torch_compile_fullgraph_gives_the_eager_tensors(g, dtype):
    q, k, v = randn(g, 2, 4, 40, 64, dtype=dtype), randn(g, 2, 2, 40, 64, dtype=dtype), randn(g, 2, 2, 40, 64, dtype=dtype)
    mask = torch.rand(2, 1, 40, 40, generator=g) > 0.5
    sinks = randn(g, 4)
    torch._dynamo.reset()
    compiled = torch.compile(every_op, fullgraph=True)  # fullgraph: a graph break raises
    for got, want in zip(compiled(q, k, v, mask, sinks), every_op(q, k, v, mask, sinks)):
        assert torch.equal(got, want)


def test_torch_export_keeps_the_ops(g):
    class Attention(torch.nn.Module):
        def forward(self, q, k, v, mask, sinks):
            return every_op(q, k, v, mask, sinks)

    args = (randn(g, 1, 4, 24, 32), randn(g, 1, 1, 24, 32), randn(g, 1, 1, 24, 32),
            torch.rand(1, 1, 24, 24, generator=g) > 0.5, randn(g, 4))
    exported = torch.export.export(Attention(), args)
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    for name in ("flash_attn_prefill", "flash_attn_prefill_blk", "sdpa", "flash_attn_vec"):
        assert f"fattn.{name}.default" in targets
    for got, want in zip(exported.module()(*args), every_op(*args)):
        assert torch.equal(got, want)
