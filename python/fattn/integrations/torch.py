"""fattn's kernels as PyTorch operators (``torch.library`` custom ops).

Importing this module imports torch and registers, in the ``fattn`` namespace::

    torch.ops.fattn.flash_attn_prefill(q, k, v, mask=None, causal="none", scale=None, softcap=0.0,
                                       window=None, sinks=None, q_offset=0, layout="bhld", blk=None,
                                       verify_blk=True) -> Tensor
    torch.ops.fattn.flash_attn_prefill_blk(mask, head_dim) -> Tensor   # the uint8 tile-skip map
    torch.ops.fattn.flash_attn_vec(q, k_cache, v_cache, kv_seq_len, scale=None, mask="none", window=0,
                                   softcap=0.0, sinks=None, ring_start=None) -> Tensor
    torch.ops.fattn.sdpa(q, k, v, causal="bottom_right", scale=None, kv_seq_len=None, sinks=None,
                         softcap=0.0, window=None) -> Tensor

Each runs :func:`fattn.flash_attn_prefill`, :func:`fattn.flash_attn_prefill_blk` (``kernel="auto"``),
:func:`fattn.flash_attn_vec` or :func:`fattn.sdpa` with
the same arguments and gives the same bits (their docstrings and docs/numerics.md say what is
computed), with these differences from the NumPy-facing functions:

- ``causal`` is a string, ``"none"``, ``"top_left"`` or ``"bottom_right"`` (an operator schema
  has no bool-or-str argument); ``"top_left"`` is what ``causal=True`` means for
  ``flash_attn_prefill``, ``"bottom_right"`` what it means for ``sdpa``.
- Tensors in and out are CPU torch tensors (float32, float16, bfloat16; masks bool or additive;
  ``sinks`` float32 ``[H]``), read in place through DLPack; the output is a new contiguous tensor
  (q's dtype and shape, in the call's layout; float32 for ``flash_attn_vec``) that the kernel
  writes in place. Tensors on another device have no kernel (torch raises).
- Every op has a fake (meta) implementation, so ``torch.compile(fullgraph=True)`` traces a
  function calling them without graph breaks, and ``torch.export`` keeps them as ops.
- There is no backward: a backward pass through an op raises ``RuntimeError`` (fattn is an
  inference kernel). The forward runs whether or not its inputs require grad.

Nothing here computes anything itself: the ops are the kernels (docs/architecture.md).
"""
from __future__ import annotations

import importlib
from typing import Any, Optional, Tuple, Union

from .. import _decode, _prefill, _sdpa

# torch is typed as Any: this module type-checks (make typecheck) whether torch is installed or not.
try:
    torch: Any = importlib.import_module("torch")
except ImportError as e:
    raise ModuleNotFoundError(f"fattn.integrations.torch needs PyTorch (pip install torch): {e}",
                              name="torch") from e

__all__ = ["CAUSAL", "flash_attn_prefill", "flash_attn_prefill_blk", "flash_attn_vec", "sdpa"]

#: The values of the ops' ``causal`` argument.
CAUSAL = ("none", "top_left", "bottom_right")

_PREFILL_SCHEMA = ('(Tensor q, Tensor k, Tensor v, Tensor? mask=None, str causal="none", float? scale=None, '
                   'float softcap=0.0, SymInt? window=None, Tensor? sinks=None, SymInt q_offset=0, '
                   'str layout="bhld", Tensor? blk=None, bool verify_blk=True) -> Tensor')
_BLK_SCHEMA = '(Tensor mask, SymInt head_dim) -> Tensor'
_VEC_SCHEMA = ('(Tensor q, Tensor k_cache, Tensor v_cache, SymInt kv_seq_len, float? scale=None, '
               'str mask="none", SymInt window=0, float softcap=0.0, Tensor? sinks=None, '
               'SymInt? ring_start=None) -> Tensor')
_SDPA_SCHEMA = ('(Tensor q, Tensor k, Tensor v, str causal="bottom_right", float? scale=None, '
                'SymInt? kv_seq_len=None, Tensor? sinks=None, float softcap=0.0, SymInt? window=None) -> Tensor')


def _causal(causal: str) -> Union[bool, str]:
    """The op's ``causal`` string as the Python API's argument (False or an alignment)."""
    if causal == "none":
        return False
    if causal in CAUSAL:
        return causal
    raise ValueError(f"causal: expected one of {CAUSAL}, got {causal!r}")


def _read(t: Any) -> Any:
    """A tensor the kernel may read through DLPack: torch refuses to export one that requires
    grad, and the kernel never records a graph, so such a tensor is read through a detached view
    (the same memory)."""
    return None if t is None else t.detach()


def _prefill_impl(q: Any, k: Any, v: Any, mask: Any = None, causal: str = "none", scale: Optional[float] = None,
                  softcap: float = 0.0, window: Optional[int] = None, sinks: Any = None, q_offset: int = 0,
                  layout: str = "bhld", blk: Any = None, verify_blk: bool = True) -> Any:
    out = torch.empty(q.shape, dtype=q.dtype)
    _prefill.flash_attn_prefill(_read(q), _read(k), _read(v), _read(mask), causal=_causal(causal), scale=scale,
                                softcap=softcap, window=window, sinks=_read(sinks), q_offset=q_offset,
                                layout=layout, blk=_read(blk), verify_blk=verify_blk, out=out)
    return out


def _blk_impl(mask: Any, head_dim: int) -> Any:
    return torch.from_numpy(_prefill.flash_attn_prefill_blk(_read(mask), head_dim=head_dim))


def _vec_impl(q: Any, k_cache: Any, v_cache: Any, kv_seq_len: int, scale: Optional[float] = None, mask: str = "none",
         window: int = 0, softcap: float = 0.0, sinks: Any = None, ring_start: Optional[int] = None) -> Any:
    out = torch.empty(q.shape, dtype=torch.float32)
    _decode.flash_attn_vec(_read(q), _read(k_cache), _read(v_cache), kv_seq_len=kv_seq_len, scale=scale, mask=mask,
                           window=window, softcap=softcap, sinks=_read(sinks), ring_start=ring_start, out=out)
    return out


def _sdpa_impl(q: Any, k: Any, v: Any, causal: str = "bottom_right", scale: Optional[float] = None,
               kv_seq_len: Optional[int] = None, sinks: Any = None, softcap: float = 0.0,
               window: Optional[int] = None) -> Any:
    out = torch.empty(q.shape, dtype=q.dtype)
    _sdpa.sdpa(_read(q), _read(k), _read(v), causal=_causal(causal), scale=scale, kv_seq_len=kv_seq_len,
               sinks=_read(sinks), softcap=softcap, window=window, out=out)
    return out


# Fake implementations: the output's shape, dtype and (contiguous) strides, nothing computed; the
# kernel's own checks run when the op runs.
def _prefill_fake(q: Any, k: Any, v: Any, *args: Any, **kwargs: Any) -> Any:
    return q.new_empty(q.shape)


def _blk_fake(mask: Any, head_dim: int) -> Any:
    bq, bk = _prefill.prefill_geometry(int(head_dim))
    return mask.new_empty((-(-mask.shape[-2] // bq), -(-mask.shape[-1] // bk)), dtype=torch.uint8)


def _vec_fake(q: Any, k_cache: Any, v_cache: Any, *args: Any, **kwargs: Any) -> Any:
    return q.new_empty(q.shape, dtype=torch.float32)


def _sdpa_fake(q: Any, k: Any, v: Any, *args: Any, **kwargs: Any) -> Any:
    return q.new_empty(q.shape)


def _no_backward(name: str) -> Any:
    def setup_context(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
        pass

    def backward(ctx: Any, *grads: Any) -> Any:
        raise RuntimeError(f"torch.ops.fattn.{name} has no backward: fattn's kernels are inference kernels. Run "
                           "the forward under torch.no_grad() / torch.inference_mode(), or use another attention "
                           "implementation for training.")
    return backward, setup_context


def _define(name: str, impl: Any, fake: Any, schema: str) -> Any:
    op = torch.library.custom_op(f"fattn::{name}", impl, mutates_args=(), device_types="cpu", schema=schema)
    op.register_fake(fake)
    backward, setup_context = _no_backward(name)
    op.register_autograd(backward, setup_context=setup_context)
    return op


flash_attn_prefill: Any = _define("flash_attn_prefill", _prefill_impl, _prefill_fake, _PREFILL_SCHEMA)
flash_attn_prefill_blk: Any = _define("flash_attn_prefill_blk", _blk_impl, _blk_fake, _BLK_SCHEMA)
flash_attn_vec: Any = _define("flash_attn_vec", _vec_impl, _vec_fake, _VEC_SCHEMA)
sdpa: Any = _define("sdpa", _sdpa_impl, _sdpa_fake, _SDPA_SCHEMA)
