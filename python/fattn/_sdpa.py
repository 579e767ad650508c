from __future__ import annotations

from typing import Optional, Union, cast

import numpy as np

from . import _core
from ._common import ArrayLike, as_array, causal_arg, integer, optional_scale, real


def sdpa(q: ArrayLike, k: ArrayLike, v: ArrayLike, *, causal: Union[bool, str] = True, scale: Optional[float] = None,
         kv_seq_len: Optional[int] = None, out: Optional[ArrayLike] = None, sinks: Optional[ArrayLike] = None,
         softcap: float = 0.0, window: Optional[int] = None) -> np.ndarray:
    """Naive fused scaled dot-product attention (mlx-native's ``sdpa`` kernel, seed 003).

    Shapes: ``q`` ``[B, H, Lq, D]``; ``k`` and ``v`` ``[B, H_kv, capacity, D]``
    (a KV cache: only the first ``kv_seq_len`` positions are read), with
    ``H % H_kv == 0`` (grouped-query attention: query head ``h`` reads K/V head
    ``h // (H // H_kv)``). Any strides; the head axis D is read in place when
    contiguous and copied otherwise.

    Dtypes: float32, float16 or ``ml_dtypes.bfloat16``, the same for q, k and v.
    The output has q's dtype and shape.

    ``causal=True`` is aligned bottom-right, as in the seed: query ``i`` sits
    at absolute position ``kv_seq_len - Lq + i`` and sees keys up to it; a
    query before the first key (``Lq > kv_seq_len``) sees none and gives 0.
    ``causal="bottom_right"`` says the same explicitly; ``causal="top_left"``
    lets query ``i`` see keys ``0..i``.
    ``scale`` defaults to ``1/sqrt(D)`` computed in float32;
    ``kv_seq_len`` defaults to the capacity ``k.shape[2]``.

    Options (fattn's extensions; all off by default):

    - ``softcap`` (a real ``>= 0``; 0 = off): each scaled score ``s`` becomes
      ``softcap * tanh(s / softcap)``, computed as
      ``softcap * tanh(dot * (scale / softcap))`` with fattn's own float32
      tanh (the same bits on every instruction set), before the causal mask
      and window.
    - ``window`` (an integer ``W >= 1``, or None): a sliding window; the query
      at position ``p`` (the causal alignment's) sees only the keys ``j`` with
      ``p - W < j <= p``, its last ``W`` positions. A window implies causal:
      ``causal=False`` with a window raises ``ValueError`` (pass
      ``causal=True``, ``"bottom_right"`` or ``"top_left"``). Keys before the
      window are skipped, which gives the same bits as masking them out.
    - ``sinks`` (a 1-D float32 array of length ``H``, or None): one learned
      logit per query head, in the units of the (capped) scores, that joins
      the softmax denominator only:
      ``out = sum_j e^{s_j} v_j / (e^{sink} + sum_j e^{s_j})``. ``-inf`` means
      no sink for that head; NaN and ``+inf`` are rejected. A row that sees no
      key still gives 0.

    Numerics (docs/numerics.md, "Naive SDPA"): f32 dot products and online
    softmax with natural exp, the running max starting at -inf, a rescale of
    the running sum and accumulator at every key, the sink as one more
    online-softmax step after the last key, a final multiply by ``1/sum``;
    one rounding to the output dtype at the store.
    ``fattn.reference.sdpa`` follows the same steps in NumPy. Non-finite q, k, v:
    docs/numerics.md, "Non-finite inputs".

    Arrays: numpy arrays, CPU torch tensors (bf16 included) or anything with
    ``__dlpack__`` or the buffer protocol, read in place (docs/numerics.md §2, "Inputs").
    ``out``: an array of q's dtype and shape to write into (any strides that do not overlap;
    misaligned or non-contiguous-D arrays are written through a temporary); it is returned.

    Errors: ``TypeError`` for a wrongly typed argument (a non-integer ``window``,
    a non-real ``softcap``, ``sinks`` not float32), ``ValueError`` for a bad value
    (``softcap`` negative or not finite, ``window < 1`` or without causal,
    ``sinks`` not ``[H]`` or NaN/``+inf``); each names the argument.
    """
    on, align = causal_arg(causal)
    result = _core.sdpa(as_array(q, "q"), as_array(k, "k"), as_array(v, "v"),
                        None if out is None else as_array(out, "out"), on, align,
                        optional_scale(scale), None if kv_seq_len is None else integer(kv_seq_len, "kv_seq_len"),
                        None if sinks is None else as_array(sinks, "sinks"), real(softcap, "softcap"),
                        None if window is None else integer(window, "window"))
    return result if out is None else cast(np.ndarray, out)
