"""Decoder-only LLMs (GPT-2, Llama, Qwen2 shapes) as base models: tiny random models built from a config
with a word-level tokenizer made here (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine import ExperimentConfig, MetaTrainer
from engine.data.loading import DEMO_DATASET
from engine.models.backbone import find_layer_stack, load_encoder

ARCHS = ("gpt2", "llama", "qwen2")


def _tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    texts = [json.loads(line)["text"] for line in DEMO_DATASET.open(encoding="utf-8")]
    words = sorted({w for t in texts for w in t.lower().split()})
    vocab = {"[UNK]": 0, "[EOS]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]"), len(vocab)


@pytest.fixture(scope="module")
def decoders(tmp_path_factory) -> dict[str, Path]:
    from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel, Qwen2Config, Qwen2Model

    tok, vocab = _tokenizer()
    vocab += 16  # room for special tokens a model type's own tokenizer class adds (Qwen2's <|endoftext|>)
    ids = dict(bos_token_id=1, eos_token_id=1)
    small = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, max_position_embeddings=128, **ids)
    specs = {"gpt2": (GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=128, **ids), GPT2Model),
             "llama": (LlamaConfig(**small), LlamaModel), "qwen2": (Qwen2Config(**small), Qwen2Model)}
    out = {}
    for name, (cfg, cls) in specs.items():
        folder = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        cls(cfg).save_pretrained(folder, safe_serialization=True)
        tok.save_pretrained(folder)
        out[name] = folder
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_loads_with_last_token_pooling_and_its_layer_stack(decoders, arch):
    enc = load_encoder(str(decoders[arch]))
    assert enc.info.is_decoder and enc.pooling == "last" and enc.tokenizer.padding_side == "right"
    assert enc.tokenizer.pad_token is not None
    prefix = {"gpt2": "h", "llama": "layers", "qwen2": "layers"}[arch]
    assert find_layer_stack(enc.model) == (prefix, 2) and enc.num_layers == 2
    top = enc.layer_parameter_names(1)
    assert top and all(n.startswith(f"model.{prefix}.1.") or "norm" in n or "ln_f" in n for n in top)
    final_norm = "model.ln_f.weight" if arch == "gpt2" else "model.norm.weight"
    assert final_norm in top and not any(f".{prefix}.0." in n for n in top)


@pytest.mark.parametrize("arch", ARCHS)
def test_pooling_reads_the_last_non_pad_token(decoders, arch):
    enc = load_encoder(str(decoders[arch]))
    short, long = "check my balance", "i would like to book a flight to paris next week please"
    batch = enc.tokenize([short, long])
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # the short text is padded
    with torch.no_grad():
        pooled = enc(batch)
        alone = enc(enc.tokenize([short]))
        hidden = enc.model(**enc.tokenize([short])).last_hidden_state
    assert torch.allclose(pooled[0], alone[0], atol=1e-5)  # right padding changes nothing (causal attention)
    assert torch.allclose(alone[0], hidden[0, -1], atol=1e-6)  # = the hidden state of its last token


def small_run(path: Path, **over) -> MetaTrainer:
    base = dict(model=str(path), dataset="demo", n_way=3, k_shot=2, q_query=2, meta_batch_size=2, inner_steps=2,
                inner_lr=0.1, outer_lr=0.01, meta_iterations=3, val_interval=3, val_episodes=2, device="cpu")
    t = MetaTrainer(ExperimentConfig(**{**base, **over}))
    t.prepare()
    return t


def test_second_order_maml_through_a_llama_layer(decoders):
    t = small_run(decoders["llama"], algorithm="maml", adapt_layers=1, train_layers=1)
    assert t.model.encoder.model.config._attn_implementation == "eager"
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    records = list(t.run())
    assert len(records) == 3 and all(torch.isfinite(torch.tensor(r.metrics["outer_loss"])) for r in records)
    moved = [n for n, p in t.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert any(".layers.1." in n for n in moved) and not any(".layers.0." in n for n in moved)


@pytest.mark.parametrize("arch,targets", [("gpt2", {"c_attn", "c_proj", "c_fc"}),
                                          ("qwen2", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                     "up_proj", "down_proj"})])
def test_lora_maml_on_decoders_trains_adapters_only(decoders, arch, targets):
    t = small_run(decoders[arch], algorithm="lora_maml", lora_r=2, first_order=True)
    lora = [n for n in t.learner.adapted_names if ".lora_" in n]
    modules = {n.split(".lora_")[0] for n in lora}
    assert {m.rsplit(".", 1)[-1] for m in modules} == targets
    assert len(lora) == 2 * len(modules) and all(".0." in m or ".1." in m for m in modules)  # A and B per module
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    list(t.run())
    for n, p in t.model.named_parameters():
        if not torch.equal(p.detach(), before[n]):
            assert ".lora_" in n or n.startswith("head.") or n == "log_scale", n


def test_frozen_decoder_is_encoded_once(decoders):
    t = small_run(decoders["gpt2"], algorithm="protonet")
    assert t.features.table is not None and t.features.table.shape[1] == 32
    records = list(t.run())
    assert 0.0 <= records[-1].metrics["val_accuracy"] <= 1.0
