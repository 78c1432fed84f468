"""The playground: adapt a meta-trained model to your own labels and watch it classify as you type.

Source: the run selected in the main window (:func:`engine.export.restore_run`, then
:func:`engine.export.classifier_from_trainer`) or an exported folder (:func:`engine.load_checkpoint`).
Loading, adapting and predicting all run in one background :class:`~gui.jobs.JobThread` (one
prediction with the bundled model takes about 0.1-1 s on a CPU, too slow for the GUI thread), one
job at a time; the query box is debounced (250 ms) and only the newest text is predicted. Once
adapted, "Export ONNX…" writes the adapted classifier as one ONNX graph (:func:`engine.export.onnx.export_onnx`,
seconds) in the same job thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine import DataError, RunStore
from gui.jobs import JobThread

SELECTED_RUN = "Selected run"
EXPORTED_FOLDER = "Exported folder…"
# three intents, three examples each (the docs' screenshot and the tests use them too)
SAMPLE_EXAMPLES = """\
alarm: wake me up at seven
alarm: set an alarm for noon
alarm: alarm at five am please
weather: will it rain today
weather: what's the forecast for tomorrow
weather: is it sunny outside
music: play some jazz
music: put on my workout playlist
music: skip to the next song
"""
PLACEHOLDER = "One labelled example per line, as  label: text\n\n" + "\n".join(SAMPLE_EXAMPLES.splitlines()[:4])


def parse_examples(text: str) -> tuple[list[str], list[str]]:
    """``"label: text"`` lines as ``(texts, labels)``; blank lines and ``#`` comments are skipped.

    Raises:
        DataError: a line without ``:`` or with an empty label or text (field ``examples``, with its line).
    """
    texts, labels = [], []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        label, sep, example = line.partition(":")
        if not sep or not label.strip() or not example.strip():
            raise DataError(f"line {n} ({line[:40]!r}) is not 'label: text'.", field="examples",
                            hint="Write one example per line, e.g. 'alarm: wake me up at seven'.")
        texts.append(example.strip())
        labels.append(label.strip())
    if not texts:
        raise DataError("no examples.", field="examples", hint="Write one 'label: text' per line.")
    return texts, labels


class PlaygroundWidget(QWidget):
    """Load a classifier, adapt it on typed examples and show live predictions with probabilities.

    Args:
        db_path: the run database (opened in the job thread to restore the selected run).
        debounce_ms: quiet time after the last keystroke before the query is predicted.

    Signals:
        statusMessage(str): one-line progress/results for the window's status bar.
    """

    statusMessage = Signal(str)

    def __init__(self, db_path: str | Path, debounce_ms: int = 250, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.db_path = Path(db_path)
        self.jobs = JobThread("metastudio-playground", self)
        self.classifier: Any = None  # touched only inside jobs (the job thread)
        self.source_text = ""
        self.adapted = False
        self.last_prediction = None
        self.latency_ms: float | None = None
        self.last_onnx_path: Path | None = None
        self._run_id: int | None = None
        self._predicting = False
        self._predicted_text: str | None = None

        # ---- source ----------------------------------------------------------------------------
        self.source = QComboBox()
        self.source.addItems([SELECTED_RUN, EXPORTED_FOLDER])
        self.source.setToolTip("Use the run selected in the list, or a folder written by Export.")
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("Load the model (the run's data and model are re-prepared: seconds).")
        self.load_button.clicked.connect(lambda: self.load())  # not clicked(bool) as folder
        self.source_label = QLabel("No model loaded.")
        self.source_label.setWordWrap(True)
        self.busy_label = QLabel("")
        self.busy_label.setStyleSheet("color: #b06000;")
        top = QHBoxLayout()
        top.addWidget(QLabel("Model:"))
        top.addWidget(self.source, 1)
        top.addWidget(self.load_button)

        # ---- examples ----------------------------------------------------------------------------
        self.examples = QPlainTextEdit()
        self.examples.setPlaceholderText(PLACEHOLDER)
        self.examples.setMinimumHeight(120)
        self.adapt_button = QPushButton("Adapt")
        self.adapt_button.setToolTip("Adapt the loaded model to these labelled examples.")
        self.adapt_button.clicked.connect(lambda: self.adapt())
        self.adapt_label = QLabel("")
        self.adapt_label.setWordWrap(True)
        self.onnx_button = QPushButton("Export ONNX…")
        self.onnx_button.setToolTip("Write the adapted classifier (encoder + adapted head) as one ONNX model "
                                    "(tokens in, class probabilities out) with its tokenizer files beside it.")
        self.onnx_button.clicked.connect(lambda: self.export_onnx())  # not clicked(bool) as path
        self.onnx_label = QLabel("")
        self.onnx_label.setWordWrap(True)
        self.onnx_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        adapt_row = QHBoxLayout()
        adapt_row.addWidget(self.adapt_button)
        adapt_row.addWidget(self.adapt_label, 1)
        adapt_row.addWidget(self.onnx_button)

        # ---- query and prediction ---------------------------------------------------------------
        self.query = QLineEdit()
        self.query.setPlaceholderText("Type a text to classify…")
        self.query.textChanged.connect(self._on_query_changed)
        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(debounce_ms)
        self.debounce.timeout.connect(self.predict_now)
        self.predicted_label = QLabel("—")
        self.predicted_label.setStyleSheet("font-size: 26px; font-weight: 700;")
        self.latency_label = QLabel("")
        self.latency_label.setStyleSheet("color: gray;")
        self.bars_box = QWidget()
        self.bars = QGridLayout(self.bars_box)
        self.bars.setContentsMargins(0, 0, 0, 0)
        self.bar_widgets: list[tuple[QLabel, QProgressBar]] = []

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.source_label)
        lay.addWidget(self.busy_label)
        lay.addWidget(QLabel("Labelled examples (label: text):"))
        lay.addWidget(self.examples, 2)
        lay.addLayout(adapt_row)
        lay.addWidget(self.onnx_label)
        lay.addWidget(QLabel("Query:"))
        lay.addWidget(self.query)
        pred_row = QHBoxLayout()
        pred_row.addWidget(self.predicted_label, 1)
        pred_row.addWidget(self.latency_label, 0, Qt.AlignmentFlag.AlignBottom)
        lay.addLayout(pred_row)
        lay.addWidget(self.bars_box)
        lay.addStretch(1)
        self._update_buttons()

    # ---- state ---------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a load or adapt job is in flight (predictions do not count)."""
        return bool(self.busy_label.text())

    def _set_busy(self, text: str) -> None:
        self.busy_label.setText(text)
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self.busy
        self.load_button.setEnabled(not busy and (self.source.currentText() != SELECTED_RUN
                                                  or self._run_id is not None))
        self.adapt_button.setEnabled(not busy and self.classifier is not None)
        self.onnx_button.setEnabled(not busy and self.adapted)

    def set_run(self, run_id: int | None) -> None:
        """The run selected in the main window (the "Selected run" source; None = no selection)."""
        self._run_id = run_id
        self._update_buttons()

    def _set_adapt_message(self, text: str, error: bool = False) -> None:
        self.adapt_label.setText(text)
        self.adapt_label.setStyleSheet("color: #c62828;" if error else "color: #2e7d32;")

    # ---- loading -------------------------------------------------------------------------------
    def load(self, folder: str | Path | None = None) -> bool:
        """Load the chosen source in the job thread (asks for the folder if ``folder`` is None)."""
        if self.busy:
            return False
        if self.source.currentText() == SELECTED_RUN and folder is None:
            if self._run_id is None:
                return False
            run_id, db_path = self._run_id, self.db_path
            what = f"run {run_id}"

            def job():
                from engine.export import classifier_from_trainer, restore_run

                store = RunStore(db_path)  # this thread's own connection
                try:
                    _run, trainer = restore_run(store, run_id, device="cpu", with_data=False)
                finally:
                    store.close()
                return classifier_from_trainer(trainer)
        else:
            if folder is None:
                folder = QFileDialog.getExistingDirectory(self, "Open an exported model folder")
                if not folder:
                    return False
            path = Path(folder)
            what = str(path)

            def job():
                from engine import load_checkpoint

                return load_checkpoint(path, device="cpu")

        self._set_busy(f"Loading {what}…")
        self.jobs.submit(job, lambda clf: self._on_loaded(clf, what), self._on_load_failed)
        return True

    def _on_loaded(self, classifier: Any, what: str) -> None:
        self.classifier = classifier
        self.adapted = False
        self.onnx_label.setText("")
        self.source_text = what
        self.source_label.setText(f"Loaded {what} ({classifier.config.algorithm}). Now write examples and Adapt.")
        self.source_label.setStyleSheet("")
        self._clear_prediction()
        self._set_busy("")
        self.statusMessage.emit(f"Playground: loaded {what}.")
        if self.examples.toPlainText().strip():
            self.adapt()

    def _on_load_failed(self, message: str, _details: str) -> None:
        self._set_busy("")
        self.source_label.setText(f"Cannot load: {message}")
        self.source_label.setStyleSheet("color: #c62828;")
        self.statusMessage.emit(f"Playground: cannot load: {message}")

    # ---- adapting -----------------------------------------------------------------------------
    @Slot()
    def adapt(self) -> bool:
        """Parse the examples and adapt the classifier to them in the job thread; False on bad input."""
        if self.classifier is None or self.busy:
            return False
        try:
            texts, labels = parse_examples(self.examples.toPlainText())
        except DataError as err:
            self._set_adapt_message(str(err), error=True)
            return False
        classifier = self.classifier
        self._set_busy(f"Adapting to {len(texts)} examples…")

        def job():
            t0 = time.perf_counter()
            classifier.adapt(texts, labels)
            return (time.perf_counter() - t0) * 1000.0

        self.jobs.submit(job, lambda ms: self._on_adapted(len(texts), ms), self._on_adapt_failed)
        return True

    def _on_adapted(self, n: int, ms: float) -> None:
        self.adapted = True
        self._set_busy("")
        classes = self.classifier.classes
        self._set_adapt_message(f"Adapted to {n} examples of {len(classes)} labels ({ms:.0f} ms).")
        self._predicted_text = None
        if self.query.text().strip():
            self.predict_now()

    def _on_adapt_failed(self, message: str, _details: str) -> None:
        self.adapted = False
        self._set_busy("")
        self._set_adapt_message(message, error=True)

    # ---- ONNX export ---------------------------------------------------------------------------
    def ask_onnx_path(self) -> str:
        """Ask where to write the ONNX model ("" if cancelled; tests monkeypatch this)."""
        path, _filter = QFileDialog.getSaveFileName(self, "Export the adapted classifier as ONNX", "model.onnx",
                                                    "ONNX models (*.onnx)")
        if path and not Path(path).suffix:
            path += ".onnx"
        return path

    def export_onnx(self, path: str | Path | None = None) -> bool:
        """Write the adapted classifier to ``path`` (asks if None) in the job thread; False if not started.

        Success and errors are shown below the Adapt row and sent as :attr:`statusMessage`.
        """
        if not self.adapted or self.busy:
            return False
        if path is None:
            path = self.ask_onnx_path()
            if not path:
                return False
        target = Path(path)
        classifier = self.classifier
        self._set_busy(f"Exporting ONNX to {target.name}…")

        def job():
            t0 = time.perf_counter()
            out = classifier.export_onnx(target)
            return out, time.perf_counter() - t0

        self.jobs.submit(job, lambda res: self._on_onnx_exported(*res), self._on_onnx_failed)
        return True

    def _on_onnx_exported(self, out: Path, seconds: float) -> None:
        self._set_busy("")
        self.last_onnx_path = out
        labels = ", ".join(self.classifier.classes)
        self.onnx_label.setText(f"Exported ONNX ({labels}) to {out} with its tokenizer files ({seconds:.1f} s).")
        self.onnx_label.setStyleSheet("color: #2e7d32;")
        self.statusMessage.emit(f"Playground: exported ONNX model to {out}.")

    def _on_onnx_failed(self, message: str, _details: str) -> None:
        self._set_busy("")
        self.onnx_label.setText(f"ONNX export failed: {message}")
        self.onnx_label.setStyleSheet("color: #c62828;")
        self.statusMessage.emit(f"Playground: ONNX export failed: {message}")

    # ---- predicting ---------------------------------------------------------------------------
    @Slot(str)
    def _on_query_changed(self, _text: str) -> None:
        self.debounce.start()  # restarts: predicts 250 ms after the last keystroke

    @Slot()
    def predict_now(self) -> bool:
        """Predict the query text in the job thread (at most one prediction in flight)."""
        text = self.query.text()
        if not self.adapted or not text.strip() or self._predicting or text == self._predicted_text:
            return False
        self._predicting = True
        classifier = self.classifier

        def job():
            t0 = time.perf_counter()
            pred = classifier.predict([text])[0]
            return pred, (time.perf_counter() - t0) * 1000.0

        self.jobs.submit(job, lambda res: self._on_predicted(text, *res), self._on_predict_failed)
        return True

    def _on_predicted(self, text: str, prediction: Any, ms: float) -> None:
        self._predicting = False
        self._predicted_text = text
        self.last_prediction, self.latency_ms = prediction, ms
        self.predicted_label.setText(prediction.label)
        self.latency_label.setText(f"{ms:.0f} ms")
        self._show_bars(prediction.probabilities)
        if self.query.text() != text:  # typed on while this ran
            self.predict_now()

    def _on_predict_failed(self, message: str, _details: str) -> None:
        self._predicting = False
        self.predicted_label.setText("—")
        self.latency_label.setText(message)

    def _clear_prediction(self) -> None:
        self.last_prediction, self.latency_ms, self._predicted_text = None, None, None
        self.predicted_label.setText("—")
        self.latency_label.setText("")
        self._show_bars({})

    def _show_bars(self, probabilities: dict[str, float]) -> None:
        for label, bar in self.bar_widgets:
            self.bars.removeWidget(label)
            self.bars.removeWidget(bar)
            label.deleteLater()
            bar.deleteLater()
        self.bar_widgets = []
        ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])
        for row, (name, p) in enumerate(ranked):
            label = QLabel(name)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(round(p * 1000))
            bar.setFormat(f"{p:.1%}")
            bar.setTextVisible(True)
            self.bars.addWidget(label, row, 0)
            self.bars.addWidget(bar, row, 1)
            self.bar_widgets.append((label, bar))

    def bar_values(self) -> dict[str, float]:
        """The probabilities shown by the bars (label -> 0..1), in display order."""
        return {label.text(): bar.value() / 1000.0 for label, bar in self.bar_widgets}

    def shutdown(self, timeout_ms: int = 60_000) -> bool:
        """Stop the job thread (waiting for a running job); True if it ended."""
        self.debounce.stop()
        return self.jobs.stop(timeout_ms)
