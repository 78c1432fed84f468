"""Export runs as Hugging Face style folders and load them back as few-shot classifiers."""

from engine.export.classifier import FewShotClassifier, Prediction
from engine.export.folder import classifier_from_trainer, export_run, load_checkpoint, restore_run
from engine.export.onnx import export_onnx

__all__ = ["FewShotClassifier", "Prediction", "classifier_from_trainer", "export_onnx", "export_run",
           "load_checkpoint", "restore_run"]
