"""Run a transformer from cached hidden states: only the top layers per episode.

When a run trains or adapts only the top ``k`` transformer layers, the output of the frozen bottom
``L - k`` layers never changes. :func:`encode_hidden` computes it once per text (stopping the forward
pass right after layer ``L - k``), and :func:`skip_bottom_layers` later runs the *same* model forward
with those cached states: the bottom layers are swapped for stubs that return the cache, so the
model's own code still builds the attention mask, position embeddings and final norm, and fast
weights passed with ``torch.func.functional_call`` reach the top layers unchanged. This works for any
model whose forward calls its layer list (``encoder.layer``, ``h``, ``layers``) in order — BERT-,
RoBERTa-, GPT-2- and Llama-like stacks; :func:`check_partial_forward` verifies it against a full
forward pass before a run relies on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from engine.models.backbone import TextEncoder

BOTTOM_HIDDEN = "bottom_hidden"
BOTTOM_LAYERS = "bottom_layers"


@dataclass(frozen=True)
class BottomSpec:
    """How cached states were made: after ``n_bottom`` layers, whose output is ``kind``
    (``"tensor"`` or ``"tuple:<n>"``, see :func:`encode_hidden`)."""

    n_bottom: int
    kind: str = "tensor"


class _StopForward(Exception):
    """Raised by a forward hook to end a forward pass once the wanted layer has run."""


def layer_list(encoder: TextEncoder) -> torch.nn.ModuleList:
    """The encoder's transformer block list (see :func:`~engine.models.backbone.find_layer_stack`)."""
    return encoder.model.get_submodule(encoder.layer_prefix)


def encode_hidden(encoder: TextEncoder, texts: list[str], device: torch.device, n_bottom: int,
                  batch_size: int = 64) -> tuple[list[torch.Tensor], str]:
    """Hidden states after the first ``n_bottom`` transformer layers, one tensor per text.

    Texts are batched in order of length; each forward pass stops after layer ``n_bottom`` (the top
    layers never run). Runs in eval mode under ``torch.inference_mode`` (bf16 autocast on CUDA).

    Returns:
        ``(rows, kind)``: ``rows[i]`` float32 (T_i, D) on ``device``, T_i = the text's token count
        (padding removed); ``kind`` is ``"tensor"`` or ``"tuple:<n>"``, how the layer returns its output.

    Raises:
        ValueError: ``n_bottom`` outside [1, number of layers], or a tokenizer that pads on the left.
    """
    layers = layer_list(encoder)
    if not 1 <= n_bottom <= len(layers):
        raise ValueError(f"n_bottom must be in [1, {len(layers)}], got {n_bottom}")
    if getattr(encoder.tokenizer, "padding_side", "right") != "right":
        raise ValueError("cached hidden states need a tokenizer that pads on the right")
    captured: dict[str, Any] = {}

    def hook(_module, _args, out):
        captured["out"] = out
        raise _StopForward

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches: list[tuple[list[int], torch.Tensor, list[int]]] = []
    kind = "tensor"
    was_training = encoder.training
    encoder.eval()
    handle = layers[n_bottom - 1].register_forward_hook(hook)
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = encoder.tokenize([texts[i] for i in idx], device)
                captured.clear()
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    try:
                        encoder.model(**batch)
                    except _StopForward:
                        pass
                out = captured["out"]
                if isinstance(out, tuple):
                    kind, out = f"tuple:{len(out)}", out[0]
                batches.append((idx, out.float(), batch["attention_mask"].sum(1).tolist()))
    finally:
        handle.remove()
        encoder.train(was_training)
    # Sliced outside inference mode, so the rows are ordinary tensors that autograd may save.
    rows: list[torch.Tensor] = [torch.empty(0)] * len(texts)
    for idx, hidden, lengths in batches:
        for j, i in enumerate(idx):
            rows[i] = hidden[j, :lengths[j]].clone()
    return rows, kind


@contextmanager
def skip_bottom_layers(encoder: TextEncoder, hidden: torch.Tensor, spec: BottomSpec) -> Iterator[None]:
    """Inside the block, the first ``spec.n_bottom`` layers return ``hidden`` (B, T, D) instead of computing.

    The layers' ``forward`` is replaced on the instance only and restored on exit, so parameter names,
    ``state_dict`` and ``functional_call`` see the unchanged model.
    """
    layers = layer_list(encoder)
    n_out = int(spec.kind.split(":")[1]) if spec.kind.startswith("tuple:") else 0

    def stub(*_args, **_kwargs):
        return (hidden, *([None] * (n_out - 1))) if n_out else hidden

    saved = []
    for i in range(spec.n_bottom):
        layer = layers[i]
        saved.append((layer, layer.__dict__.get("forward")))
        layer.forward = stub
    try:
        yield
    finally:
        for layer, previous in saved:
            if previous is None:
                del layer.forward
            else:
                layer.forward = previous


def check_partial_forward(encoder: TextEncoder, texts: list[str], rows: list[torch.Tensor], n_bottom: int,
                          kind: str, device: torch.device, atol: float = 1e-4) -> float:
    """Largest absolute difference (pooled output) between a full forward and the cached path.

    Compares :meth:`~engine.models.backbone.TextEncoder.forward` on the tokenised ``texts`` with the
    same call given the cached ``rows`` (from :func:`encode_hidden`); both in eval mode, float32. A
    result above ``atol`` means this model cannot use cached hidden states.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            batch = encoder.tokenize(texts, device)
            full = encoder(batch).float()
            cached = dict(batch)
            cached[BOTTOM_HIDDEN] = pad_rows(rows, batch["attention_mask"].shape[1], device)
            cached[BOTTOM_LAYERS] = BottomSpec(n_bottom, kind)
            part = encoder(cached).float()
    finally:
        encoder.train(was_training)
    return (full - part).abs().max().item()


def pad_rows(rows: list[torch.Tensor], length: int, device: torch.device) -> torch.Tensor:
    """Stack per-text states (T_i, D) into (B, length, D), zero after each text's tokens (right padding)."""
    out = torch.zeros(len(rows), length, rows[0].shape[-1], dtype=rows[0].dtype, device=device)
    for i, r in enumerate(rows):
        out[i, :r.shape[0]] = r
    return out
