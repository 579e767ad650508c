"""Integrations with other frameworks, each a submodule imported on its own (``import fattn`` imports
none of them, nor torch or transformers):

- :mod:`fattn.integrations.torch`: fattn's kernels as ``torch.library`` custom ops
  (``torch.ops.fattn.flash_attn_prefill``, ``torch.ops.fattn.flash_attn_vec``,
  ``torch.ops.fattn.sdpa``), with fake implementations for ``torch.compile`` and ``torch.export``.
- :mod:`fattn.integrations.transformers`: ``register()`` makes ``attn_implementation="fattn"``
  run a Hugging Face transformers model's attention layers on those ops.
- :mod:`fattn.integrations.distributed`: ``ring_attention`` (sequence-parallel prefill) and
  ``decode_sharded`` (a KV cache sharded across ranks) on ``torch.distributed``, with
  ``launch_local`` to run local ranks.

They add no arithmetic of their own: every result is the kernel's (docs/numerics.md).
"""
