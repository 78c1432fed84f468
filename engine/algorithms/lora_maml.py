"""LoRA-MAML: MAML whose inner loop adapts low-rank adapters instead of the base weights.

MAML (Finn, Abbeel & Levine, ICML 2017, arXiv:1703.03400) applied to the LoRA parameterisation of
Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022 (arXiv:2106.09685): each
targeted weight W (d_out × d_in) becomes W + (α/r)·B·A with A (r × d_in), B (d_out × r), B = 0 at the
start. The base weights W stay frozen; the meta-parameters are the adapters' initialisation (A, B),
the head and the embedding scale::

    φ'_i = φ − lr ∇_φ L_support(f_{W, φ})          φ = (A, B, head); inner_steps times
    φ ← φ − β ∇_φ Σ_i L_query(f_{W, φ'_i})         (Adam; second order unless ``first_order``)

This is how a model too large to adapt whole is meta-trained: only r·(d_in + d_out) numbers per
targeted matrix enter the inner loop. The adapters are injected with ``peft`` (``inject_adapter_in_model``,
so module names stay those of the base model), and the inner loop runs the encoder with fast adapter
weights through ``torch.func.functional_call`` like MAML's.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from engine.algorithms.maml import MAML
from engine.errors import ConfigError

# Module names (last dotted component) LoRA targets by default, per Hugging Face model_type:
# the attention projections and the MLP of each transformer layer.
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "key", "value", "dense"),
    "roberta": ("query", "key", "value", "dense"),
    "xlm-roberta": ("query", "key", "value", "dense"),
    "electra": ("query", "key", "value", "dense"),
    "mpnet": ("q", "k", "v", "o", "dense"),
    "distilbert": ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
}
LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
for _t in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "gemma", "gemma2", "gemma3_text",
           "phi3", "olmo", "olmo2", "smollm3", "granite", "starcoder2"):
    DEFAULT_TARGETS[_t] = LLAMA_LIKE


def _is_linear(module: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, nn.Linear | Conv1D)


def lora_target_names(encoder, targets: Sequence[str] = (), layers: int = 0) -> list[str]:
    """Full module names (relative to ``encoder.model``) of the linear layers LoRA will wrap.

    Args:
        encoder: a :class:`~engine.models.backbone.TextEncoder`.
        targets: module names or dotted name suffixes (``"query"``, ``"attention.output.dense"``);
            empty = :data:`DEFAULT_TARGETS` of the model type, else every linear layer of the blocks.
        layers: only the top ``layers`` blocks of the stack get adapters (0 = every block).

    Only modules inside the transformer block stack are matched (never the pooler or the LM head),
    so every adapter takes part in the forward pass.

    Raises:
        ConfigError: no linear module in the blocks matches (field ``lora_target_modules``), or
            ``layers`` exceeds the model's block count (field ``lora_layers``).
    """
    if layers > encoder.num_layers:
        raise ConfigError(f"{layers} exceeds the model's {encoder.num_layers} transformer layers.",
                          field="lora_layers", hint=f"Use a value from 0 (every layer) to {encoder.num_layers}.")
    first = encoder.num_layers - layers if layers else 0
    prefix = encoder.layer_prefix + "."
    wanted = tuple(t.strip() for t in targets if t.strip()) or DEFAULT_TARGETS.get(encoder.info.model_type, ())
    names = []
    for name, module in encoder.model.named_modules():
        if not name.startswith(prefix) or not _is_linear(module):
            continue
        if int(name[len(prefix):].split(".", 1)[0]) < first:
            continue
        if not wanted or any(name == t or name.endswith("." + t) for t in wanted):
            names.append(name)
    if not names:
        raise ConfigError(f"no linear layer of the {encoder.info.model_type} blocks matches "
                          f"{', '.join(wanted) or '(none)'}.", field="lora_target_modules",
                          hint="Name modules such as query,value (BERT), c_attn (GPT-2) or q_proj,v_proj "
                               "(Llama/Qwen), or leave it empty for the default.")
    return names


def add_lora(encoder, *, r: int, alpha: float, dropout: float = 0.0, targets: Sequence[str] = (),
             layers: int = 0) -> list[str]:
    """Inject LoRA adapters (``peft``) into ``encoder.model`` in place.

    The adapters' B matrices start at zero, so the encoder's output is unchanged until training.

    Returns:
        The adapter parameter names relative to ``encoder`` (``model.<module>.lora_A.default.weight``, ...).

    Raises:
        ConfigError: see :func:`lora_target_names`.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from transformers.pytorch_utils import Conv1D

    names = lora_target_names(encoder, targets, layers)
    modules = dict(encoder.model.named_modules())
    conv1d = any(isinstance(modules[n], Conv1D) for n in names)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=names, fan_in_fan_out=conv1d,
                     bias="none")
    inject_adapter_in_model(cfg, encoder.model)
    return [n for n, _ in encoder.named_parameters() if ".lora_A." in n or ".lora_B." in n]


class LoRAMAML(MAML):
    """LoRA-MAML: the inner loop adapts only LoRA adapters and the head; base weights never change.

    Args:
        adapted_names: ``head.*`` and LoRA adapter (``lora_A`` / ``lora_B``) parameter names.
        first_order: drop second derivatives (default False).

    Raises:
        ValueError: an adapted or meta-trained name that is neither an adapter, the head nor ``log_scale``.
    """

    name = "lora_maml"

    def __init__(self, model, *, adapted_names: Sequence[str], meta_names: Sequence[str],
                 first_order: bool = False, **kwargs) -> None:
        def ok(n: str) -> bool:
            return n.startswith("head.") or ".lora_A." in n or ".lora_B." in n

        bad = [n for n in adapted_names if not ok(n)] + [n for n in meta_names if not ok(n) and n != "log_scale"]
        if bad:
            raise ValueError(f"LoRA-MAML trains only adapters, the head and log_scale; got {bad[:3]}")
        super().__init__(model, adapted_names=adapted_names, meta_names=meta_names, first_order=first_order,
                         **kwargs)

    @classmethod
    def config_kwargs(cls, config) -> dict:
        return {"first_order": config.first_order}
