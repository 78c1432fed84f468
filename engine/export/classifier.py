"""A meta-trained model as a few-shot text classifier: ``adapt(texts, labels)`` then ``predict(texts)``.

Adaptation runs the run's own algorithm (its inner loop, or ProtoNet's prototypes) through the same
:class:`~engine.algorithms.base.MetaLearner` code that trained it, so a classifier built from a run in
the app and one loaded from its export folder predict the same labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.algorithms.base import MetaLearner, Task
from engine.config import ExperimentConfig
from engine.errors import DataError


@dataclass
class Prediction:
    """One text's predicted label and the probability of every class (summing to 1)."""

    label: str
    probabilities: dict[str, float]


class FewShotClassifier:
    """Adapt a meta-trained text model to new classes from a few labelled examples.

    Args:
        model: the :class:`~engine.models.metamodel.MetaModel` with meta-trained weights (eval mode).
        learner: the run's algorithm bound to ``model`` (used for adaptation only; nothing is trained).
        config: the run's experiment config (algorithm, inner steps and learning rate).
        device: where the model lives.
        frozen: the encoder has no adapted layers, so support embeddings are computed once in :meth:`adapt`.
    """

    def __init__(self, model: torch.nn.Module, learner: MetaLearner, config: ExperimentConfig,
                 device: torch.device, frozen: bool) -> None:
        self.model = model.eval()
        self.learner = learner
        self.config = config
        self.device = device
        self.frozen = frozen
        self.classes: list[str] = []
        self._support_x = None
        self._support_y: torch.Tensor | None = None
        self._adapted: Any = None  # the adaptation's result, computed once per support set
        self._head_init = None
        if hasattr(model, "head"):
            self._head_init = (model.head.weight.detach().clone(), model.head.bias.detach().clone())

    def _inputs(self, texts: Sequence[str]):
        enc = self.model.encoder
        if self.frozen:  # encode() returns inference-mode tensors: clone so autograd may save them
            return enc.encode(list(texts), self.device).clone()
        return enc.tokenize(list(texts), self.device)

    def adapt(self, texts: Sequence[str], labels: Sequence[str]) -> FewShotClassifier:
        """Remember a support set: ``texts[i]`` has label ``labels[i]`` (at least 2 distinct labels).

        With a number of classes other than the training N, the head initialisation is the mean of
        the meta-learned rows for every class (the rows are exchangeable, since classes are shuffled
        in every training episode).

        Raises:
            DataError: fewer than 2 classes, empty or mismatched inputs.
        """
        texts = [str(t).strip() for t in texts]
        labels = [str(lab).strip() for lab in labels]
        if len(texts) != len(labels) or not texts:
            raise DataError("give one label per example text (and at least one example).", field="examples")
        if any(not t for t in texts) or any(not lab for lab in labels):
            raise DataError("every example needs a non-empty text and label.", field="examples")
        classes = list(dict.fromkeys(labels))
        if len(classes) < 2:
            raise DataError(f"only one class ({classes[0]!r}); a classifier needs at least 2.", field="examples",
                            hint="Add examples of another label.")
        self.classes = classes
        self._resize_head(len(classes))
        self._support_x = self._inputs(texts)
        self._support_y = torch.tensor([classes.index(lab) for lab in labels], device=self.device)
        self._adapted = None
        return self

    def _adapted_state(self) -> Any:
        """Adapt once per support set: MAML family -> the adapted weights, ProtoNet -> the support
        embeddings (S, D); other learners -> None (each prediction adapts anew)."""
        from engine.algorithms.maml import MAML
        from engine.algorithms.protonet import ProtoNet

        if self._adapted is None:
            if isinstance(self.learner, MAML):
                self._adapted = self.learner.adapted_weights(self._support_x, self._support_y)
            elif isinstance(self.learner, ProtoNet):
                with torch.no_grad():
                    self._adapted = self.model.embed(self._support_x)
        return self._adapted

    @property
    def support(self) -> tuple[Any, torch.Tensor | None]:
        """The adapted support set as ``(inputs, class indices)``: model inputs (pooled features (S, D)
        for a frozen encoder, else a tokenised batch) and int64 (S,) indices into :attr:`classes`;
        ``(None, None)`` before :meth:`adapt`."""
        return self._support_x, self._support_y

    def export_onnx(self, path: str | Path) -> Path:
        """Write the adapted classifier as one ONNX graph (tokens -> class probabilities) at ``path``.

        See :func:`engine.export.onnx.export_onnx` (tokenizer files are written beside it).

        Raises:
            ConfigError: :meth:`adapt` was not called, or the ``onnx`` package is not installed.
            MetaStudioError, StoreError: as :func:`engine.export.onnx.export_onnx`.
        """
        from engine.export.onnx import export_onnx

        return export_onnx(self, path)

    def _resize_head(self, n: int) -> None:
        if self._head_init is None:
            return
        w0, b0 = self._head_init
        if n != w0.shape[0]:
            w0 = w0.mean(0, keepdim=True).expand(n, -1).clone()
            b0 = b0.mean().expand(n).clone()
        head = torch.nn.Linear(w0.shape[1], n).to(self.device)
        with torch.no_grad():
            head.weight.copy_(w0)
            head.bias.copy_(b0)
        head.requires_grad_(False)
        self.model.head = head

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Predicted label and class probabilities for each text.

        The support set is adapted to once, at the first prediction after :meth:`adapt`; later calls
        reuse the adapted weights (MAML family) or support embeddings (ProtoNet).

        Raises:
            RuntimeError: :meth:`adapt` was not called.
        """
        if self._support_y is None:
            raise RuntimeError("call adapt(texts, labels) before predict()")
        texts = [str(t) if str(t).strip() else " " for t in texts]
        if not texts:
            return []
        query_x = self._inputs(texts)
        dummy = torch.zeros(len(texts), dtype=torch.long, device=self.device)
        state = self._adapted_state()
        if state is None:
            logits = self.learner.predict_query(Task(self._support_x, self._support_y, query_x, dummy))
        elif isinstance(state, dict):  # MAML family: the adapted weights
            logits = self.learner.predict_adapted(state, query_x)
        else:  # ProtoNet: the support embeddings
            with torch.no_grad():
                logits = self.learner.logits_from_embeddings(state, self._support_y, self.model.embed(query_x))
        probs = torch.softmax(logits.float(), dim=-1).cpu()
        out = []
        for row in probs:
            p = {c: float(v) for c, v in zip(self.classes, row.tolist(), strict=True)}
            out.append(Prediction(self.classes[int(row.argmax())], p))
        return out
