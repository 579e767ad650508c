"""Hugging Face transformers on fattn: ``attn_implementation="fattn"``.

::

    import fattn.integrations.transformers
    fattn.integrations.transformers.register()
    model = AutoModelForCausalLM.from_pretrained(..., attn_implementation="fattn")
    # or, on a model already built: model.set_attn_implementation("fattn")

:func:`register` adds ``"fattn"`` to transformers' ``AttentionInterface`` (the attention
function, :func:`attention_forward`) and to its ``AttentionMaskInterface`` (the mask function:
transformers' own ``sdpa_mask``, boolean masks elided in exactly the cases the ``"sdpa"`` path
elides them; without a registered mask function transformers would pass no padding mask at all).
Every attention layer then runs on fattn's kernels through the ``torch.ops.fattn`` operators
(:mod:`fattn.integrations.torch`):

- prefill and every call with more than one query: ``torch.ops.fattn.flash_attn_prefill``
  (the model's padding or sliding-window mask as a boolean mask; causal, top-left aligned, when
  transformers elides the mask, as its ``"sdpa"`` path does; grouped-query heads read in place;
  the layer's ``scaling``, its ``softcap`` (Gemma 2) and its sinks (``s_aux``, gpt-oss));
- a single-token decode step without a mask, or with a sliding layer's mask that keeps exactly the
  last W positions (no padding), head dim a multiple of 32 up to 512:
  ``torch.ops.fattn.flash_attn_vec`` over the whole KV cache (its query is rounded to float16 as
  mlx-native's decode kernel does; docs/numerics.md §5) when the step is large enough for it to
  be the faster of the two: ``B * H * Lk * D >= VEC_MIN_WORK``.

Query, key and value are read in place through DLPack (the ``[B, L, H, D]`` views of the layer's
``[B, H, L, D]`` tensors), and the output is written in the ``[B, L, H, D]`` layout transformers
returns. What fattn cannot do raises an error naming the model option instead of computing
something else: attention dropout (a model in training mode with ``attention_dropout > 0``),
float64 weights, a T5-style ``position_bias``, ``output_attentions=True``, key and value head
dims that differ. A backward pass raises (fattn is inference-only).
"""
from __future__ import annotations

import importlib
from typing import Any, Optional, Tuple

__all__ = ["register", "attention_forward", "VEC_MIN_WORK"]

#: A decode step runs on ``flash_attn_vec`` when ``B * H * Lk * D`` (its query-key products) is at
#: least this; below, the prefill kernel with one query row was as fast or faster (2 threads,
#: f32 and bf16, H 4 to 32, D 32 to 128: the decode kernel took 0.9x the time or less from 2**19
#: on, 0.7-1.2x below it).
VEC_MIN_WORK = 1 << 19

_NAME = "fattn"

# torch, once register() (or a first call) has imported it: a module global, not an import inside
# attention_forward, so that torch.compile traces a model through it without a graph break.
_torch: Any = None


def _import_torch() -> Any:
    global _torch
    if _torch is None:
        importlib.import_module("fattn.integrations.torch")  # the torch.ops.fattn operators
        _torch = importlib.import_module("torch")
    return _torch


def register(name: str = _NAME) -> None:
    """Registers ``name`` (default ``"fattn"``) with transformers' ``AttentionInterface`` and
    ``AttentionMaskInterface``, so ``attn_implementation=name`` (``from_pretrained``, a config's
    ``_attn_implementation``, or ``model.set_attn_implementation(name)``) runs attention on fattn.
    Imports torch and transformers; calling it again changes nothing."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    _import_torch()
    try:
        modeling_utils = importlib.import_module("transformers.modeling_utils")
        masking_utils = importlib.import_module("transformers.masking_utils")
    except ImportError as e:
        raise ModuleNotFoundError(f"fattn.integrations.transformers.register() needs transformers "
                                  f"(pip install transformers): {e}", name="transformers") from e
    modeling_utils.AttentionInterface.register(name, attention_forward)
    masking_utils.AttentionMaskInterface.register(name, masking_utils.sdpa_mask)


def _unsupported(option: str, why: str) -> NotImplementedError:
    return NotImplementedError(f"attn_implementation='fattn': {option} {why}")


def _window_of(torch: Any, mask: Any, sliding_window: Optional[int], kv_len: int) -> int:
    """W if ``mask`` (a decode step's, ``[B, 1, 1, Lk]``) is True at exactly the last
    ``W = min(sliding_window, Lk)`` positions of every row, else 0. Reads the mask, so not while
    torch.compile traces (the prefill kernel takes the mask there)."""
    if (not sliding_window or mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1
            or mask.shape[2] != 1 or torch.compiler.is_compiling()):
        return 0
    w = min(int(sliding_window), kv_len)
    window_row = torch.arange(kv_len, device=mask.device) >= kv_len - w
    return w if bool(torch.equal(mask, window_row.expand(mask.shape))) else 0


def attention_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                      dropout: float = 0.0, scaling: Optional[float] = None, sliding_window: Optional[int] = None,
                      softcap: Optional[float] = None, s_aux: Any = None, is_causal: Optional[bool] = None,
                      position_bias: Any = None, **kwargs: Any) -> Tuple[Any, None]:
    """An attention function with transformers' signature: ``query`` ``[B, H, Lq, D]``, ``key`` and
    ``value`` ``[B, H_kv, Lk, D]`` (torch tensors, float32, float16 or bfloat16), the mask
    ``register`` makes (boolean ``[B, 1, Lq, Lk]``, True = attend, or None) or any boolean or
    additive 4-D mask a caller passes. Returns ``(attn_output [B, Lq, H, D], None)`` in query's
    dtype (no attention weights). Options as the ``"sdpa"`` path reads them (``scaling``, the
    module's ``is_causal``), plus ``softcap`` and ``s_aux`` (sinks), which ``"sdpa"`` has not."""
    torch = _torch if _torch is not None else _import_torch()
    ops = torch.ops.fattn
    if dropout:
        raise _unsupported("attention dropout", f"(p={dropout}) is not implemented: the model is in training mode "
                           "with config.attention_dropout > 0; call model.eval() or set attention_dropout=0.0")
    if position_bias is not None:
        raise _unsupported("position_bias", "(a T5-style relative attention bias) is not implemented")
    if kwargs.get("output_attentions"):
        raise _unsupported("output_attentions=True", "is not available: fattn does not form the attention "
                           "weights; use attn_implementation='eager' to get them")
    if query.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise _unsupported(f"dtype {query.dtype}", "is not supported: fattn runs float32, float16 and bfloat16 "
                           "models (load the model with dtype=torch.float32, float16 or bfloat16)")
    if key.dtype != query.dtype or value.dtype != query.dtype:
        raise _unsupported("mixed dtypes", f"(query {query.dtype}, key {key.dtype}, value {value.dtype}) are "
                           "not supported")
    d = query.shape[-1]
    if value.shape[-1] != d or key.shape[-1] != d:
        raise _unsupported("head dims", f"must agree: query and key {d}, value {value.shape[-1]} "
                           "(config.head_dim / v_head_dim)")
    if d > 4096:  # the prefill kernel's range (docs/numerics.md §4), said here in the model's terms
        raise _unsupported(f"head_dim {d}", "is not supported: fattn's prefill takes head dims 1 to 4096 "
                           "(config.head_dim)")
    sinks = None if s_aux is None else s_aux.to(torch.float32)
    cap = float(softcap) if softcap else 0.0
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    q_len, kv_len = query.shape[2], key.shape[2]
    if (q_len == 1 and d % 32 == 0 and d <= 512
            and query.shape[0] * query.shape[1] * kv_len * d >= VEC_MIN_WORK):
        # A decode step. Without a mask the one query sees every cached position (transformers
        # elides the mask only when nothing is masked; a sliding window is then wider than the
        # cache). A sliding layer's mask that keeps exactly the last W positions of every row (no
        # padding, a dynamic cache) is the decode kernel's own "sliding_window".
        vec_mask, vec_window = "none", 0
        if attention_mask is not None:
            vec_window = _window_of(torch, attention_mask, sliding_window, kv_len)
            vec_mask = "sliding_window" if vec_window else ""
        if vec_mask:
            out = ops.flash_attn_vec(query[:, :, 0], key, value, kv_seq_len=kv_len, scale=scaling,
                                     mask=vec_mask, window=vec_window, softcap=cap, sinks=sinks)
            return out.to(query.dtype).unsqueeze(1), None
    mask = blk = window = None
    causal = "none"
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise _unsupported(f"attention mask of type {type(attention_mask).__name__}",
                               "is not supported (a boolean or additive torch.Tensor is)")
        mask = attention_mask
        # The tile-skip map of this mask: the tiles it blocks whole (above a causal diagonal,
        # outside a window, padding) are not visited. Built from this very mask, so the kernel's
        # check that it matches (one more pass over the mask) is skipped; it changes no bit.
        blk = ops.flash_attn_prefill_blk(mask, d)
    elif is_causal and q_len > 1:
        # transformers' "sdpa" convention for an elided mask: causal, top-left aligned (the query
        # block starts at the first key: a prompt, or an empty static cache). Within a window the
        # same: passing it lets the kernel skip the tiles outside it.
        causal = "top_left"
        if sliding_window:
            window = int(sliding_window)
    out = ops.flash_attn_prefill(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), mask,
                                 causal=causal, scale=scaling, softcap=cap, window=window, sinks=sinks,
                                 layout="blhd", blk=blk, verify_blk=False)
    return out, None
