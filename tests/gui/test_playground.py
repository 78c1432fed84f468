"""The Export… button and the Playground tab, on one real (tiny) protonet run of the demo data set."""

from __future__ import annotations

import pytest

from gui.widgets.playground import SAMPLE_EXAMPLES

QUERY = "set an alarm for six"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A completed 5-iteration protonet run on the demo data set: ``(db_path, run_id)``."""
    from engine import ExperimentConfig, TrainingSession

    db = tmp_path_factory.mktemp("playground") / "runs.db"
    config = ExperimentConfig(name="playground", algorithm="protonet", dataset="demo", meta_iterations=5,
                              val_interval=5, val_episodes=5, device="cpu")
    session = TrainingSession(config, db_path=db)
    for _ in session.run():
        pass
    assert session.status == "completed"
    return db, session.run_id


@pytest.fixture
def db_path(trained):
    """The windows of this module open the trained run's database."""
    return trained[0]


def _select(qtbot, window, run_id):
    window.runs.select_run(run_id)
    qtbot.waitUntil(lambda: window.details.run_id == run_id, timeout=5_000)


def test_export_button_writes_a_loadable_folder(qtbot, make_window, trained, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox
    from transformers import AutoModel

    import gui.main_window

    _db, run_id = trained
    window = make_window()
    _select(qtbot, window, run_id)
    assert window.export_button.isEnabled()
    out = tmp_path / "export"
    monkeypatch.setattr(gui.main_window.QFileDialog, "getExistingDirectory", lambda *_a, **_k: str(out))
    window.export_button.click()
    assert not window.export_button.isEnabled()  # one export at a time
    qtbot.waitUntil(lambda: not window._exporting, timeout=60_000)
    assert window.last_error == ""
    assert "Exported run" in window.status_label.text()
    assert (out / "model.safetensors").is_file() and (out / "metastudio.json").is_file()
    model = AutoModel.from_pretrained(out)
    assert model.config.hidden_size == 384  # the bundled all-MiniLM-L6-v2

    # the folder is no longer empty: No keeps it untouched, Yes overwrites it
    asked = []

    def answer(reply):
        return lambda *_a, **_k: asked.append(reply) or reply

    monkeypatch.setattr(gui.main_window.QMessageBox, "question", answer(QMessageBox.StandardButton.No))
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert window.export_selected_run() is False
    monkeypatch.setattr(gui.main_window.QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    assert window.export_selected_run() is True
    qtbot.waitUntil(lambda: not window._exporting, timeout=60_000)
    assert len(asked) == 2 and window.last_error == ""
    assert (out / "model.safetensors").stat().st_mtime_ns >= before


def test_export_failure_shows_an_error(qtbot, make_window, trained, tmp_path):
    _db, run_id = trained
    window = make_window()
    _select(qtbot, window, run_id)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert window.export_selected_run(blocker) is True  # a file, not a folder: the engine refuses
    qtbot.waitUntil(lambda: not window._exporting, timeout=60_000)
    assert "is a file" in window.last_error
    assert window.error_box is not None and "failed" in window.status_label.text()

    other = tmp_path / "my_notes"  # not empty and not an export: refused before anything is asked
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    window.last_error = ""
    assert window.export_selected_run(other) is False
    assert "not a MetaStudio export" in window.last_error
    assert [p.name for p in other.iterdir()] == ["keep.txt"]


def test_playground_adapts_and_predicts_from_run_and_folder(qtbot, make_window, trained, tmp_path,
                                                            monkeypatch):
    import gui.widgets.playground as pg_module
    from engine import RunStore
    from engine.export import export_run

    db, run_id = trained
    window = make_window()
    window.right_tabs.setCurrentIndex(1)
    pg = window.playground
    assert not pg.load_button.isEnabled()  # no run selected yet
    _select(qtbot, window, run_id)
    assert pg.load_button.isEnabled() and not pg.adapt_button.isEnabled()

    # the selected run: restored in the job thread
    assert pg.load() is True
    assert pg.busy and not pg.load_button.isEnabled()
    qtbot.waitUntil(lambda: pg.classifier is not None and not pg.busy, timeout=60_000)
    assert f"run {run_id}" in pg.source_label.text()
    assert not pg.onnx_button.isEnabled() and pg.export_onnx(tmp_path / "m.onnx") is False  # not adapted

    # bad examples: shown in red, nothing adapted
    pg.examples.setPlainText("alarm: wake me up\nalarm: set an alarm")
    pg.adapt_button.click()
    qtbot.waitUntil(lambda: not pg.busy, timeout=30_000)
    assert "at least 2" in pg.adapt_label.text() and "c62828" in pg.adapt_label.styleSheet()
    pg.examples.setPlainText("alarm wake me up")
    assert pg.adapt() is False and "label: text" in pg.adapt_label.text()

    pg.examples.setPlainText(SAMPLE_EXAMPLES)
    pg.adapt_button.click()
    qtbot.waitUntil(lambda: pg.adapted and not pg.busy, timeout=30_000)
    assert "9 examples of 3 labels" in pg.adapt_label.text()
    qtbot.keyClicks(pg.query, QUERY)
    assert pg.last_prediction is None  # debounced: nothing predicted per keystroke
    qtbot.waitUntil(lambda: pg.last_prediction is not None, timeout=30_000)
    assert pg.predicted_label.text() == "alarm" == pg.last_prediction.label
    bars = pg.bar_values()
    assert list(bars) == sorted(bars, key=lambda k: -bars[k]) and set(bars) == {"alarm", "weather", "music"}
    assert sum(bars.values()) == pytest.approx(1.0, abs=0.01)
    assert pg.latency_ms is not None and pg.latency_ms > 0 and "ms" in pg.latency_label.text()
    from_run = pg.last_prediction

    # an exported folder: loaded, re-adapted on the same examples and the query predicted again
    store = RunStore(db)
    try:
        folder = export_run(store, run_id, tmp_path / "exported")
    finally:
        store.close()
    pg.source.setCurrentText(pg_module.EXPORTED_FOLDER)
    monkeypatch.setattr(pg_module.QFileDialog, "getExistingDirectory", lambda *_a, **_k: str(folder))
    pg.load_button.click()
    qtbot.waitUntil(lambda: pg.source_text == str(folder) and pg.last_prediction is not None, timeout=60_000)
    assert pg.predicted_label.text() == "alarm"
    for label, p in from_run.probabilities.items():
        assert pg.last_prediction.probabilities[label] == pytest.approx(p, abs=1e-3)


def test_playground_exports_the_adapted_classifier_as_onnx(qtbot, make_window, trained, tmp_path, monkeypatch):
    import json

    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    _db, run_id = trained
    window = make_window()
    window.right_tabs.setCurrentIndex(1)
    pg = window.playground
    _select(qtbot, window, run_id)
    pg.examples.setPlainText(SAMPLE_EXAMPLES)
    pg.query.setText(QUERY)
    assert pg.load() is True
    qtbot.waitUntil(lambda: pg.last_prediction is not None, timeout=90_000)  # loaded, adapted, predicted
    assert pg.onnx_button.isEnabled()

    # an error (the target is a folder) is shown, the window carries on
    assert pg.export_onnx(tmp_path) is True
    assert not pg.onnx_button.isEnabled() and not pg.adapt_button.isEnabled()  # one job at a time
    qtbot.waitUntil(lambda: not pg.busy, timeout=60_000)
    assert "ONNX export failed" in pg.onnx_label.text() and "is a folder" in pg.onnx_label.text()
    assert "c62828" in pg.onnx_label.styleSheet() and pg.onnx_button.isEnabled()

    # the button, with the file dialog answered: the model reproduces the playground's prediction
    target = tmp_path / "onnx" / "model.onnx"
    monkeypatch.setattr(pg, "ask_onnx_path", lambda: str(target))
    with qtbot.waitSignal(pg.statusMessage, timeout=60_000) as status:
        pg.onnx_button.click()
    assert "exported ONNX model" in status.args[0] and pg.last_onnx_path == target.resolve()
    assert "Exported ONNX (alarm, weather, music)" in pg.onnx_label.text()
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    labels = json.loads(session.get_modelmeta().custom_metadata_map["metastudio.labels"])
    batch = AutoTokenizer.from_pretrained(target.parent)([QUERY], return_tensors="np")
    probs = session.run(None, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})[0][0]
    assert labels[int(np.argmax(probs))] == "alarm" == pg.last_prediction.label
    for label, p in zip(labels, probs, strict=True):
        assert float(p) == pytest.approx(pg.last_prediction.probabilities[label], abs=1e-4)
