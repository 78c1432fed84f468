"""Export an adapted :class:`~engine.export.classifier.FewShotClassifier` as one ONNX graph.

The graph is the whole adapted classifier: tokens -> encoder -> pooling -> unit-norm embedding x
learned scale -> the adapted head (MAML family: the inner loop's weights, LoRA adapters included) or
the support prototypes (ProtoNet) -> softmax. It runs with ``onnxruntime`` alone, without PyTorch::

    inputs   input_ids       int64 (batch, sequence)
             attention_mask  int64 (batch, sequence)   1 = token, 0 = padding
    output   probabilities   float32 (batch, n_classes), rows sum to 1, columns in ``labels`` order

Tokenise with the tokenizer files written next to the ``.onnx`` file
(``AutoTokenizer.from_pretrained(folder)``, ``padding=True, truncation=True, max_length=`` the
``metastudio.max_length`` metadata entry). The metadata (``metadata_props``) also holds the class
labels as a JSON list (``metastudio.labels``), the tokenizer's name, the algorithm, the base model and
the MetaStudio version.

Needs the optional dependencies ``onnx`` (and ``onnxruntime`` to run the result):
``pip install 'metastudio[onnx]'``.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from engine._files import current_umask
from engine.errors import ConfigError, MetaStudioError, StoreError

if TYPE_CHECKING:
    from engine.export.classifier import FewShotClassifier

FORMAT = "metastudio-onnx/1"
OPSET = 17
INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAME = "probabilities"
INSTALL_HINT = "Install the ONNX extra: pip install 'metastudio[onnx]'"


def _metastudio_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("metastudio")
    except PackageNotFoundError:
        return "unknown"


def require_onnx():
    """The ``onnx`` module.

    Raises:
        ConfigError: it is not installed (the hint names the install command).
    """
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the 'onnx' package, which is not installed.", field="onnx",
                          hint=INSTALL_HINT) from None
    return onnx


class AdaptedClassifierGraph(nn.Module):
    """The adapted classifier as a plain module: ``(input_ids, attention_mask)`` -> probabilities (B, N).

    Args:
        model: the :class:`~engine.models.metamodel.MetaModel` with its adapted weights in place (on
            the CPU, float32, eval mode; a copy, so the classifier keeps its meta-trained weights).
        prototypes: ProtoNet class prototypes (N, D) in embedding space, or None for a head.
        token_type_ids: the encoder takes ``token_type_ids`` (passed as zeros: one segment).
    """

    def __init__(self, model: nn.Module, prototypes: torch.Tensor | None, token_type_ids: bool) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("prototypes", prototypes)
        self.token_type_ids = token_type_ids

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.token_type_ids:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        if self.prototypes is None:
            logits = self.model(batch)
        else:  # ProtoNet: -‖q − p‖² / s (engine.algorithms.protonet), written out for the exporter
            q = self.model.embed(batch)
            diff = q[:, None, :] - self.prototypes[None, :, :]
            logits = -diff.pow(2).sum(-1) / self.model.log_scale.exp()
        return torch.softmax(logits.float(), dim=-1)


def adapted_graph(classifier: FewShotClassifier) -> AdaptedClassifierGraph:
    """The adapted state of ``classifier`` as an :class:`AdaptedClassifierGraph` on the CPU (float32).

    The model is copied (the classifier itself is left as it was), so this needs memory for a second
    copy of the model's weights.

    Raises:
        ConfigError: :meth:`~FewShotClassifier.adapt` was not called, or the algorithm has no known
            adapted state to export.
    """
    from engine.algorithms.maml import MAML
    from engine.algorithms.protonet import ProtoNet

    support_x, support_y = classifier.support
    if support_y is None:
        raise ConfigError("the classifier is not adapted yet, so there is nothing to export.", field="classifier",
                          hint="Call adapt(texts, labels) first (or press Adapt in the Playground).")
    learner, model = classifier.learner, classifier.model
    if isinstance(learner, ProtoNet):
        with torch.no_grad():
            emb = model.embed(support_x).float()
            n = len(classifier.classes)
            protos = torch.zeros(n, emb.shape[-1], dtype=emb.dtype, device=emb.device).index_add(0, support_y, emb)
            protos = protos / torch.bincount(support_y, minlength=n).clamp(min=1).to(emb.dtype)[:, None]
        weights: dict[str, torch.Tensor] = {}
        prototypes: torch.Tensor | None = protos.cpu()
    elif isinstance(learner, MAML):
        weights = {k: v.float().cpu() for k, v in learner.adapted_weights(support_x, support_y).items()}
        prototypes = None
    else:
        raise ConfigError(f"ONNX export does not know the adapted state of '{learner.name}' runs.",
                          field="algorithm", hint="Export a MAML-family or ProtoNet run.")
    # a copy (sharing the tokenizer) on the CPU in float32, with the adapted weights in place
    graph_model = copy.deepcopy(model, memo={id(model.encoder.tokenizer): model.encoder.tokenizer})
    graph_model = graph_model.to("cpu", torch.float32).eval().requires_grad_(False)
    with torch.no_grad():
        for name, value in weights.items():
            graph_model.get_parameter(name).copy_(value)
    names = getattr(model.encoder.tokenizer, "model_input_names", [])
    return AdaptedClassifierGraph(graph_model, prototypes, "token_type_ids" in names).eval()


def _base_model(classifier: FewShotClassifier) -> str:
    """The model the run started from: a classifier loaded from an export folder names the folder as its
    model, so the original comes from that folder's metastudio.json."""
    model = str(classifier.config.model)
    meta = Path(model) / "metastudio.json"
    if meta.is_file():
        try:
            return str(json.loads(meta.read_text(encoding="utf-8"))["config"]["model"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return model


def _metadata(classifier: FewShotClassifier) -> dict[str, str]:
    enc = classifier.model.encoder
    return {
        "metastudio.format": FORMAT,
        "metastudio.version": _metastudio_version(),
        "metastudio.labels": json.dumps(classifier.classes),
        "metastudio.algorithm": classifier.config.algorithm,
        "metastudio.base_model": _base_model(classifier),
        "metastudio.tokenizer": str(getattr(enc.tokenizer, "name_or_path", "") or classifier.config.model),
        "metastudio.max_length": str(enc.max_length),
        "metastudio.pooling": enc.pooling,
        "metastudio.inputs": "input_ids, attention_mask: int64 (batch, sequence)",
        "metastudio.output": "probabilities: float32 (batch, n_classes), columns in metastudio.labels order",
    }


def export_onnx(classifier: FewShotClassifier, path: str | Path) -> Path:
    """Write the adapted ``classifier`` as the ONNX graph ``path`` plus its tokenizer files beside it.

    See the module docstring for the graph's inputs, output and metadata. The ``.onnx`` file is
    written to a temporary file and renamed into place, so a failure never leaves a half-written
    model; tokenizer files already in the folder with the same names are replaced.

    Args:
        classifier: a classifier on which :meth:`~FewShotClassifier.adapt` was called.
        path: the ``.onnx`` file to write (its folder is created if needed).

    Returns:
        The absolute path of the written file.

    Raises:
        ConfigError: the classifier is not adapted, its algorithm has no exportable adapted state, or
            the ``onnx`` package is not installed.
        MetaStudioError: ``path`` is an existing folder, or the exporter fails on this model.
        StoreError: the file cannot be written (disk full, not writable); nothing is left behind.
    """
    onnx = require_onnx()
    out = Path(path).expanduser().resolve()
    if out.is_dir():
        raise MetaStudioError(f"'{out}' is a folder.", field="path", hint="Give a file path such as model.onnx.")
    graph = adapted_graph(classifier)
    enc = classifier.model.encoder
    example = enc.tokenize(["an example text", "and another one, a bit longer"], torch.device("cpu"))
    args = (example["input_ids"], example["attention_mask"])
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter (dynamo=False; deprecated since torch 2.9 but 4x faster here and
            # without the onnxscript dependency) notes Python-level branches, e.g. the attention
            # mask's padding check, that are constant for an encoder; the tests check the graph
            # against predict() at other batch and sequence sizes.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                graph, args, buffer, input_names=INPUT_NAMES, output_names=[OUTPUT_NAME], opset_version=OPSET,
                dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                              "attention_mask": {0: "batch", 1: "sequence"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True, dynamo=False)
    except Exception as err:  # the exporter's errors name an unsupported operator or construct
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MetaStudioError(f"the ONNX exporter failed on this model: {msg}", field="path",
                              hint="Export the run as a folder instead, or report the model type.") from err
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in _metadata(classifier).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"MetaStudio {classifier.config.algorithm} few-shot classifier over "
                        f"{', '.join(classifier.classes)}; output: class probabilities.")

    tmp_file = tmp_tok = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        tmp_file = Path(name)
        os.chmod(tmp_file, 0o666 & ~current_umask())  # mkstemp makes it private (0600)
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        tmp_tok = Path(tempfile.mkdtemp(prefix=f".{out.stem}.tokenizer-", dir=out.parent))
        enc.tokenizer.save_pretrained(tmp_tok)
        for file in tmp_tok.iterdir():
            os.replace(file, out.parent / file.name)
        os.replace(tmp_file, out)
        tmp_file = None
    except OSError as err:
        raise StoreError(f"cannot write the ONNX model to '{out}': {err.strerror or err}.", field="path",
                         hint="Free disk space or pick a writable folder.") from None
    finally:
        if tmp_file is not None:
            tmp_file.unlink(missing_ok=True)
        if tmp_tok is not None:
            shutil.rmtree(tmp_tok, ignore_errors=True)
    return out
