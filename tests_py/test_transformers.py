"""attn_implementation="fattn" in Hugging Face transformers (fattn.integrations.transformers).

Tiny models built from configs with random weights (nothing is downloaded), one per feature the
integration maps onto a kernel argument: a BERT encoder with padding (a bidirectional boolean
mask), a Llama with grouped-query heads, a Mistral with a sliding window shorter than the prompt,
a Gemma 2 with an attention softcap, and a gpt-oss with sinks. Each runs in float32, bfloat16
and float16; its output must be within the error of transformers' own attention at that dtype
("sdpa", or "eager" where "sdpa" cannot run the model: Gemma 2's softcap, gpt-oss's sinks)
against the same model run in float64 with "eager". Greedy generation with a KV cache must give
eager's tokens in float32, on the prefill kernel and on the decode kernel. Skipped without torch
and transformers (`make test-interop` installs both).
"""
import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fattn.integrations.transformers as fattn_tf  # noqa: E402

fattn_tf.register()

VOCAB = 256
BATCH, LENGTH, PAD = 2, 40, 9  # the second sequence ends in PAD padding tokens (right padding)


def _common(**kw):
    # initializer_range 0.1 (not 0.02): scores of a few units, so softmax weights, the window,
    # the softcap and the sinks all matter.
    return dict(vocab_size=VOCAB, num_hidden_layers=2, max_position_embeddings=128, initializer_range=0.1,
                pad_token_id=0, bos_token_id=1, eos_token_id=None, **kw)


def bert():
    cfg = transformers.BertConfig(hidden_size=128, intermediate_size=256, num_attention_heads=4,
                                  **_common())
    return transformers.BertModel(cfg, add_pooling_layer=False)


def llama():
    cfg = transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_attention_heads=4,
                                   num_key_value_heads=2, head_dim=64, **_common())
    return transformers.LlamaForCausalLM(cfg)


def mistral():
    cfg = transformers.MistralConfig(hidden_size=128, intermediate_size=256, num_attention_heads=4,
                                     num_key_value_heads=1, head_dim=32, sliding_window=16, **_common())
    return transformers.MistralForCausalLM(cfg)


def gemma2():
    cfg = transformers.Gemma2Config(hidden_size=128, intermediate_size=256, num_attention_heads=2,
                                    num_key_value_heads=1, head_dim=128, query_pre_attn_scalar=128,
                                    attn_logit_softcapping=2.0, sliding_window=16, **_common())
    return transformers.Gemma2ForCausalLM(cfg)


def gpt_oss():
    # Every token through both experts: a top-k choice among more would flip between dtypes
    # (bfloat16 routed some tokens elsewhere: 40% error for any attention), hiding the attention's.
    cfg = transformers.GptOssConfig(hidden_size=64, intermediate_size=64, num_attention_heads=4,
                                    num_key_value_heads=2, head_dim=32, num_local_experts=2, num_experts_per_tok=2,
                                    sliding_window=16, rope_parameters=dict(rope_type="default", rope_theta=10000.0),
                                    **_common())
    model = transformers.GptOssForCausalLM(cfg)
    model.set_experts_implementation("eager")  # the default (grouped_mm) has no float64
    with torch.no_grad():
        for layer in model.model.layers:  # sinks of a few units either way, one per head
            layer.self_attn.sinks.copy_(torch.randn(cfg.num_attention_heads) * 2)
    return model


BUILDERS = {"bert": bert, "llama": llama, "mistral": mistral, "gemma2": gemma2}
if hasattr(transformers, "GptOssForCausalLM"):
    BUILDERS["gpt_oss"] = gpt_oss
DECODERS = [n for n in BUILDERS if n != "bert"]
# The reference attention at the model's dtype: transformers' "sdpa", or "eager" where "sdpa"
# cannot run the model (transformers refuses a softcap with "sdpa"; gpt-oss does not support it).
BASELINE = {"bert": "sdpa", "llama": "sdpa", "mistral": "sdpa", "gemma2": "eager", "gpt_oss": "eager"}


_models = {}


def base_model(name):
    """The model in float64 (built once per name, seeded)."""
    if name not in _models:
        torch.manual_seed(sorted(BUILDERS).index(name))
        _models[name] = BUILDERS[name]().to(torch.float64).eval()
    return _models[name]


def model_as(name, dtype, impl):
    m = copy.deepcopy(base_model(name)).to(dtype)
    m.set_attn_implementation(impl)
    assert m.config._attn_implementation == impl and m.config is not base_model(name).config
    return m.eval()


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (BATCH, LENGTH), generator=g)
    mask = torch.ones(BATCH, LENGTH, dtype=torch.long)
    mask[1, LENGTH - PAD:] = 0
    return ids, mask


def forward(name, dtype, impl, output_hidden_states=False):
    ids, mask = inputs()
    with torch.no_grad():
        out = model_as(name, dtype, impl)(input_ids=ids, attention_mask=mask,
                                          output_hidden_states=output_hidden_states)
    main = out.last_hidden_state if name == "bert" else out.logits
    return main.to(torch.float64), out


def error(name, dtype, impl):
    """max |out - float64 eager| over the positions that are not padding, and that error over
    max |float64 eager| (padding rows are the model's business: fattn gives 0 where a row sees no
    key, eager a uniform average)."""
    ref, _ = forward(name, torch.float64, "eager")
    out, _ = forward(name, dtype, impl)
    keep = inputs()[1].bool()
    err = (out - ref)[keep].abs().max().item()
    return err, err / ref[keep].abs().max().item()


DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_output_is_within_the_error_of_transformers_own_attention(name, dtype, record_property):
    base, base_rel = error(name, dtype, BASELINE[name])
    ours, ours_rel = error(name, dtype, "fattn")
    record_property("errors", dict(fattn=ours, baseline=base))
    print(f"\n{name} {dtype}: max error against float64 eager: fattn {ours:.3g} ({ours_rel:.3g} relative), "
          f"{BASELINE[name]} {base:.3g} ({base_rel:.3g} relative)")
    # Both are a few roundings of the same model at this dtype: fattn's error may differ from the
    # baseline's by chance, but not by more than half again.
    assert ours <= 1.5 * base


def test_the_variants_change_the_output():
    """The window, the softcap and the sinks are not no-ops on these models (else the tests above
    would pass without fattn honouring them)."""
    ids, mask = inputs()

    def logits(name, edit):
        m = model_as(name, torch.float32, "fattn")
        edit(m)
        with torch.no_grad():
            return m(input_ids=ids, attention_mask=mask).logits

    def no_window(m):
        m.config.sliding_window = None
        for layer in m.model.layers:
            layer.self_attn.sliding_window = None

    def no_softcap(m):
        for layer in m.model.layers:
            layer.self_attn.attn_logit_softcapping = None

    def no_sinks(m):
        for layer in m.model.layers:
            layer.self_attn.sinks.data.fill_(-float("inf"))

    cases = [("mistral", no_window), ("gemma2", no_softcap)] + ([("gpt_oss", no_sinks)] if "gpt_oss" in BUILDERS else [])
    for name, edit in cases:
        same = logits(name, lambda m: None)
        assert (logits(name, edit) - same).abs().max() > 1e-3, name


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("decode", ["prefill_kernel", "vec_kernel", "static_cache"])
def test_greedy_generation_gives_eagers_tokens(name, decode, monkeypatch):
    """Greedy decoding with a KV cache, float32: the same tokens as "eager". Decode steps run on
    the prefill kernel with one query row (steps smaller than VEC_MIN_WORK, as here) or, with the
    threshold at 0, on flash_attn_vec. With a static cache the prompt sees a cache longer than
    itself with no mask (causal, top-left aligned) and each step a boolean mask."""
    if decode == "vec_kernel":
        monkeypatch.setattr(fattn_tf, "VEC_MIN_WORK", 0)
    cache = dict(cache_implementation="static") if decode == "static_cache" else {}
    ids = inputs(seed=1)[0][:1, :24]
    tokens = {}
    for impl in ("eager", "fattn"):
        m = model_as(name, torch.float32, impl)
        with torch.no_grad():
            tokens[impl] = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
                                      pad_token_id=0, **cache)
    assert tokens["fattn"].shape[1] == 24 + 16
    assert torch.equal(tokens["fattn"], tokens["eager"])


def test_left_padded_batch_generation_matches_eager():
    """A batch with left padding: the decode steps carry a padding mask (the prefill kernel with a
    boolean mask); the tokens equal eager's in float32."""
    ids, _ = inputs(seed=2)
    ids = ids[:, :20]
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    tokens = {}
    for impl in ("eager", "fattn"):
        m = model_as("llama", torch.float32, impl)
        with torch.no_grad():
            tokens[impl] = m.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(tokens["fattn"], tokens["eager"])


def test_dropout_in_training_raises_naming_the_option():
    m = model_as("llama", torch.float32, "fattn")
    m.config.attention_dropout = 0.1
    for layer in m.model.layers:
        layer.self_attn.attention_dropout = 0.1
    m.train()
    ids, mask = inputs()
    with pytest.raises(NotImplementedError, match="attention_dropout"):
        m(input_ids=ids, attention_mask=mask)
    m.eval()  # in eval mode the model asks for no dropout: runs
    with torch.no_grad():
        m(input_ids=ids, attention_mask=mask)


def test_float64_raises_naming_the_dtype():
    m = model_as("llama", torch.float64, "fattn")
    with pytest.raises(NotImplementedError, match="float64"):
        with torch.no_grad():
            m(input_ids=inputs()[0])


def test_output_attentions_raises():
    m = model_as("llama", torch.float32, "fattn")
    with pytest.raises(NotImplementedError, match="output_attentions"):
        with torch.no_grad():
            m(input_ids=inputs()[0], output_attentions=True)


def test_backward_raises_instead_of_a_silent_zero_gradient():
    m = model_as("llama", torch.float32, "fattn")
    out = m(input_ids=inputs()[0]).logits
    with pytest.raises(RuntimeError, match="no backward"):
        out.sum().backward()


def test_attention_forward_matches_the_kernel_bit_for_bit():
    """The attention function adds no arithmetic: its output is fattn.flash_attn_prefill's on the
    same tensors (here with GQA, a boolean mask, a softcap and sinks)."""
    import numpy as np

    import fattn
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 33, 64, generator=g, dtype=torch.float32).to(torch.bfloat16)
    k = torch.randn(2, 2, 33, 64, generator=g).to(torch.bfloat16)
    v = torch.randn(2, 2, 33, 64, generator=g).to(torch.bfloat16)
    mask = torch.rand(2, 1, 33, 33, generator=g) > 0.3
    sinks = torch.randn(4, generator=g)

    class Layer(torch.nn.Module):
        is_causal = True

    out, weights = fattn_tf.attention_forward(Layer(), q, k, v, mask, scaling=0.1, softcap=3.0, s_aux=sinks)
    assert weights is None and out.shape == (2, 33, 4, 64) and out.dtype == torch.bfloat16
    want = fattn.flash_attn_prefill(q, k, v, mask, scale=0.1, softcap=3.0, sinks=sinks.numpy())
    assert np.array_equal(out.transpose(1, 2).float().numpy(), want.astype(np.float32))


def test_hidden_states_of_every_layer_are_close_in_bfloat16():
    """The same check layer by layer (examples/transformers_numerics.py's table)."""
    ref = forward("llama", torch.float64, "eager", output_hidden_states=True)[1].hidden_states
    keep = inputs()[1].bool()
    errs = {}
    for impl in ("fattn", "sdpa"):
        hs = forward("llama", torch.bfloat16, impl, output_hidden_states=True)[1].hidden_states
        errs[impl] = [(h.double() - r)[keep].abs().max().item() for h, r in zip(hs, ref)]
    assert len(errs["fattn"]) == 3
    for ours, base in zip(errs["fattn"], errs["sdpa"]):
        assert ours <= 1.5 * base + 1e-6


def test_from_pretrained_with_attn_implementation_fattn(tmp_path):
    """The README's line: a saved model (here a tiny one written to a temporary directory) loads
    with attn_implementation="fattn" and runs on it."""
    model_as("llama", torch.float32, "eager").save_pretrained(tmp_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="fattn",
                                                              dtype=torch.float32).eval()
    assert model.config._attn_implementation == "fattn"
    calls = []
    original = fattn_tf.attention_forward

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    transformers.AttentionInterface.register("fattn", spy)
    try:
        with torch.no_grad():
            model(input_ids=inputs()[0])
    finally:
        fattn_tf.register()
    assert len(calls) == model.config.num_hidden_layers


def test_a_model_on_fattn_compiles_without_graph_breaks():
    """torch.compile(fullgraph=True) over a whole model's forward (the attention function reaches
    torch through a module global and calls the torch.ops.fattn operators: nothing breaks the
    graph). The rest of the model is the compiler's arithmetic, hence a tolerance, not bits."""
    m = model_as("mistral", torch.float32, "fattn")
    ids, mask = inputs()

    def logits(ids, mask):
        return m(input_ids=ids, attention_mask=mask).logits

    torch._dynamo.reset()
    compiled = torch.compile(logits, fullgraph=True)
    with torch.no_grad():
        for attention_mask in (mask, None):  # a boolean mask; no mask (causal)
            got, want = compiled(ids, attention_mask), logits(ids, attention_mask)
            assert (got - want).abs().max() <= 1e-4 * want.abs().max()


@pytest.mark.parametrize("name", ["llama", "mistral"])
def test_a_prompt_in_two_chunks_through_the_cache_matches_eager(name):
    """The second chunk of a prompt against the cache of the first (transformers builds the mask
    with the chunk's offset: queries 20..39 against keys 0..39), float32."""
    ids = inputs(seed=4)[0][:, :40]
    logits = {}
    for impl in ("eager", "fattn"):
        m = model_as(name, torch.float32, impl)
        with torch.no_grad():
            first = m(input_ids=ids[:, :20], use_cache=True)
            logits[impl] = m(input_ids=ids[:, 20:], cache=first.past_key_values).logits
    ref = model_as(name, torch.float64, "eager")
    with torch.no_grad():
        exact = ref(input_ids=ids).logits[:, 20:]
    base = (logits["eager"].double() - exact).abs().max().item()
    ours = (logits["fattn"].double() - exact).abs().max().item()
    assert ours <= 1.5 * base


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_without_a_mask_the_elided_paths_match(name):
    """No attention mask at all: transformers elides it, and the layer's is_causal decides
    (BERT: every token sees every token; Llama: causal, top-left). float32, against float64 eager,
    within the error of "sdpa"."""
    ids = inputs()[0]
    outs = {}
    for dtype, impl in ((torch.float64, "eager"), (torch.float32, "sdpa"), (torch.float32, "fattn")):
        with torch.no_grad():
            out = model_as(name, dtype, impl)(input_ids=ids)
        outs[impl] = (out.last_hidden_state if name == "bert" else out.logits).double()
    base = (outs["sdpa"] - outs["eager"]).abs().max().item()
    ours = (outs["fattn"] - outs["eager"]).abs().max().item()
    assert ours <= 1.5 * base


def test_a_decode_step_with_a_window_mask_runs_the_decode_kernels_window(monkeypatch):
    """A sliding layer's decode-step mask that keeps exactly the last W positions is flash_attn_vec's
    "sliding_window" (the same bits); one row with padding in it keeps the mask on the prefill kernel."""
    import numpy as np

    import fattn
    monkeypatch.setattr(fattn_tf, "VEC_MIN_WORK", 0)
    g = torch.Generator().manual_seed(5)
    q, k, v = torch.randn(2, 4, 1, 64, generator=g), torch.randn(2, 2, 50, 64, generator=g), \
        torch.randn(2, 2, 50, 64, generator=g)

    class Layer(torch.nn.Module):
        is_causal = True

    window = (torch.arange(50) >= 50 - 16).expand(2, 1, 1, 50)
    out, _ = fattn_tf.attention_forward(Layer(), q, k, v, window, sliding_window=16)
    want = fattn.flash_attn_vec(q[:, :, 0], k, v, kv_seq_len=50, mask="sliding_window", window=16)
    assert np.array_equal(out[:, 0].numpy(), want)
    padded = window.clone()
    padded[1, 0, 0, -3:] = False
    out, _ = fattn_tf.attention_forward(Layer(), q, k, v, padded, sliding_window=16)
    assert np.array_equal(out.transpose(1, 2).numpy(), fattn.flash_attn_prefill(q, k, v, padded))
