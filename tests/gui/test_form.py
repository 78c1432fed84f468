"""The experiment form: defaults, live validation next to each field, Start disabled while invalid."""

from __future__ import annotations

from PySide6.QtCore import Qt

from engine import ALGORITHMS, ExperimentConfig


def _retype(qtbot, widget, text):
    widget.clear()
    qtbot.keyClicks(widget, text)


def test_defaults_are_shown(make_window):
    w = make_window()
    values = w.form.values()
    assert values["model"] == "bundled"
    assert values["dataset"] == "demo"
    assert values["algorithm"] == "maml"
    assert w.form.config() == ExperimentConfig()
    assert w.form.valid and w.start_button.isEnabled()
    assert not w.pause_button.isEnabled() and not w.stop_button.isEnabled()
    algo = w.form.editor("algorithm")
    assert [algo.itemData(i) for i in range(algo.count())] == list(ALGORITHMS)
    device = w.form.editor("device")
    assert [device.itemData(i) for i in range(device.count())] == ["auto", "cpu", "cuda", "mps"]
    # tooltips come from the pydantic field descriptions
    assert ExperimentConfig.model_fields["k_shot"].description in w.form.editor("k_shot").toolTip()
    assert w.runs.model().rowCount() == 0


def test_invalid_inner_lr_shows_error_and_disables_start(make_window, qtbot):
    w = make_window()
    lr = w.form.editor("inner_lr")
    _retype(qtbot, lr, "0")
    assert "greater than 0" in w.form.error_text("inner_lr")
    assert not w.form.valid and not w.start_button.isEnabled()
    _retype(qtbot, lr, "abc")
    assert "number" in w.form.error_text("inner_lr")
    _retype(qtbot, lr, "1e-2")
    assert w.form.error_text("inner_lr") == ""
    assert w.start_button.isEnabled()
    assert w.form.config().inner_lr == 0.01


def test_every_invalid_field_is_reported(make_window, qtbot):
    w = make_window()
    _retype(qtbot, w.form.editor("inner_lr"), "-1")
    _retype(qtbot, w.form.editor("outer_lr"), "0")
    _retype(qtbot, w.form.editor("val_fraction"), "1.5")
    assert set(w.form.errors()) == {"inner_lr", "outer_lr", "val_fraction"}
    assert not w.start_button.isEnabled()


def test_cross_field_rule_lands_on_the_field(make_window, qtbot):
    w = make_window()
    algo = w.form.editor("algorithm")
    algo.setCurrentIndex(algo.findData("protonet"))
    w.form.editor("adapt_layers").setValue(1)
    assert "adapt_layers" in w.form.error_text("adapt_layers")
    assert not w.start_button.isEnabled()
    w.form.editor("adapt_layers").setValue(0)
    assert w.start_button.isEnabled()


def test_missing_dataset_file_and_model_folder(make_window, qtbot, tmp_path):
    w = make_window()
    data = w.form.editor("dataset").lineEdit()
    _retype(qtbot, data, str(tmp_path / "nope.jsonl"))
    assert "does not exist" in w.form.error_text("dataset")
    assert not w.start_button.isEnabled()
    (tmp_path / "notes.txt").write_text("x")
    _retype(qtbot, data, str(tmp_path / "notes.txt"))
    assert "Unsupported" in w.form.error_text("dataset")
    _retype(qtbot, data, "demo")
    assert w.form.error_text("dataset") == "" and w.start_button.isEnabled()

    model = w.form.editor("model").lineEdit()
    _retype(qtbot, model, str(tmp_path / "no-model"))
    assert "does not exist" in w.form.error_text("model")
    _retype(qtbot, model, str(tmp_path))
    assert "no config.json" in w.form.error_text("model")
    _retype(qtbot, model, "sentence-transformers/all-MiniLM-L6-v2")  # a hub id: checked at Start
    assert w.form.error_text("model") == ""


def test_browse_items_open_dialogs(make_window, monkeypatch, tmp_path):
    from PySide6.QtWidgets import QFileDialog

    w = make_window()
    data_file = tmp_path / "mine.csv"
    data_file.write_text("text,label\na,b\n")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(data_file), ""))
    combo = w.form.editor("dataset")
    combo.setCurrentIndex(1)  # "File…"
    combo.activated.emit(1)
    assert w.form.values()["dataset"] == str(data_file)
    assert w.form.error_text("dataset") == ""

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: "")  # cancelled
    combo = w.form.editor("model")
    combo.setCurrentIndex(1)  # "Local folder…"
    combo.activated.emit(1)
    assert w.form.values()["model"] == "bundled"


def test_form_round_trips_a_config(make_window):
    cfg = ExperimentConfig(name="x", n_way=3, k_shot=2, q_query=4, algorithm="fomaml", inner_lr=3e-5,
                           outer_lr=0.01, meta_iterations=1234, device="cpu", plateau_threshold=0.001,
                           drop_small_labels=True, pooling="cls")
    w = make_window(config=cfg)
    assert w.form.config() == cfg
    assert w.form.editor("inner_lr").text() == "3e-05"
    assert w.form.editor("name").focusPolicy() != Qt.FocusPolicy.NoFocus
