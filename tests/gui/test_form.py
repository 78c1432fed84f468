"""The experiment form: defaults, live validation next to each field, Start disabled while invalid."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from engine import ExperimentConfig
from gui.widgets.experiment_form import ALGORITHM_KEYS, ALGORITHMS


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
    _retype(qtbot, w.form.editor("val_fraction"), "0.5")
    _retype(qtbot, w.form.editor("test_fraction"), "0.45")
    assert "10%" in w.form.error_text("val_fraction")
    assert "got {" not in w.form.error_text("val_fraction")
    assert not w.start_button.isEnabled()
    _retype(qtbot, w.form.editor("test_fraction"), "0.2")
    assert w.form.error_text("val_fraction") == "" and w.start_button.isEnabled()


@pytest.mark.skipif(not ALGORITHM_KEYS, reason="the engine has no algorithm-specific keys")
def test_algorithm_specific_fields_follow_the_algorithm(make_window, qtbot):
    w = make_window()
    algo = w.form.editor("algorithm")
    w.form.editor("adapt_layers").setValue(2)
    assert w.form.is_shown("adapt_layers") and w.form.valid
    for name in ALGORITHMS:
        algo.setCurrentIndex(algo.findData(name))
        for key, users in ALGORITHM_KEYS.items():
            assert w.form.is_shown(key) == (name in users)
            assert w.form.editor(key).isVisibleTo(w.form) == (name in users)
        assert w.form.valid, (name, w.form.errors())
    # a hidden key went back to its default, so the config stays valid
    algo.setCurrentIndex(algo.findData("maml"))
    assert w.form.config().adapt_layers == 0


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
    i = combo.findText("File…")
    combo.setCurrentIndex(i)
    combo.activated.emit(i)
    assert w.form.values()["dataset"] == str(data_file)
    assert w.form.error_text("dataset") == ""

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: "")  # cancelled
    combo = w.form.editor("model")
    i = combo.findText("Local folder…")
    combo.setCurrentIndex(i)
    combo.activated.emit(i)
    assert w.form.values()["model"] == "bundled"


def test_form_round_trips_a_config(make_window):
    cfg = ExperimentConfig(name="x", n_way=3, k_shot=2, q_query=4, algorithm="fomaml", inner_lr=3e-5,
                           outer_lr=0.01, meta_iterations=1234, device="cpu", plateau_threshold=0.001,
                           drop_small_labels=True, pooling="cls")
    w = make_window(config=cfg)
    assert w.form.config() == cfg
    assert w.form.editor("inner_lr").text() == "3e-05"
    assert w.form.editor("name").focusPolicy() != Qt.FocusPolicy.NoFocus


def test_sinusoid_hides_text_fields_and_takes_the_papers_settings(make_window, qtbot):
    from gui.widgets.experiment_form import TEXT_ONLY_KEYS

    w = make_window()
    form = w.form
    combo = form.editor("dataset")
    form.editor("meta_iterations").setValue(77)  # a value the user chose is kept throughout
    combo.setEditText("sinusoid")
    values = form.values()
    # the MAML paper's sinusoid settings replace the text defaults (inner_lr 0.5 diverges at once)
    assert (float(values["inner_lr"]), float(values["outer_lr"])) == (0.01, 0.001)
    assert (values["meta_batch_size"], values["inner_steps"], values["meta_iterations"]) == (25, 1, 77)
    for key in ("model", "max_length", "pooling", "text_column", "label_column", "n_way", "val_fraction",
                "test_fraction", "split_seed", "train_layers", "gradient_checkpointing"):
        assert key in TEXT_ONLY_KEYS and not form.is_shown(key)
        assert form.editor(key).isHidden() or not form.editor(key).isVisibleTo(form)
    for key in ("k_shot", "q_query", "inner_lr", "algorithm", "meta_iterations", "seed"):
        assert form.is_shown(key) and form.editor(key).isVisibleTo(form)
    base_box = form.editor("model").parentWidget().parentWidget()
    assert not base_box.isVisibleTo(form)  # the whole "Base model" group goes
    assert form.valid and form.config().dataset == "sinusoid" and form.config().inner_lr == 0.01

    # a value typed while on sinusoid stays; the untouched ones go back to the defaults on leaving it
    form.editor("inner_steps").setValue(3)
    combo.setEditText("demo")
    values = form.values()
    assert (float(values["inner_lr"]), values["meta_batch_size"], values["inner_steps"]) == (0.5, 4, 3)
    assert form.is_shown("model") and base_box.isVisibleTo(form) and form.editor("n_way").isVisibleTo(form)

    # values the user typed before picking sinusoid are not overwritten
    form.editor("inner_lr").setText("0.2")
    combo.setEditText("sinusoid")
    assert float(form.values()["inner_lr"]) == 0.2 and form.values()["meta_batch_size"] == 25


def test_lora_maml_takes_a_smaller_inner_lr_unless_the_user_chose_one(make_window):
    form = make_window().form
    algo = form.editor("algorithm")
    algo.setCurrentIndex(algo.findData("lora_maml"))
    assert float(form.values()["inner_lr"]) == 0.1 and form.config().inner_lr == 0.1
    algo.setCurrentIndex(algo.findData("maml"))
    assert float(form.values()["inner_lr"]) == 0.5  # back to the default it replaced
    form.editor("inner_lr").setText("0.3")
    algo.setCurrentIndex(algo.findData("lora_maml"))
    assert float(form.values()["inner_lr"]) == 0.3  # typed by the user: kept
