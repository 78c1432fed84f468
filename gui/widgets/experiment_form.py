"""The experiment form: one widget per :class:`~engine.ExperimentConfig` field, validated live.

Every edit rebuilds the config dict and runs :func:`engine.validate_config` on it (repeatedly, so
that every invalid field is found, not only the first), then checks that a data file or model folder
given as a path exists. Each problem is shown in red under its field and :attr:`ExperimentForm.valid`
turns False, which the window uses to disable Start. Errors the engine raises later (for example
"label X has only 3 examples" at Start) can be attached to a field with
:meth:`ExperimentForm.set_external_error`; they are cleared by the next edit.

Integer fields use spin boxes limited to their valid range; floats are typed as text (so ``3e-5``
works) and checked by the config model.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QScrollArea,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)

import engine.config as engine_config
from engine import ConfigError, ExperimentConfig, validate_config

BROWSE_FOLDER = "Local folder…"
BROWSE_FILE = "File…"
DATA_FILTER = "Data files (*.jsonl *.json *.csv *.tsv *.parquet);;All files (*)"
# Kept in step with engine.data.loading.SUPPORTED_SUFFIXES (the engine re-checks at Start).
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
ALL_DEVICES = ("auto", "cpu", "cuda", "mps")
ALGORITHMS: tuple[str, ...] = engine_config.ALGORITHMS
# Task families that are not files (e.g. "sinusoid") and keys used only by some algorithms (the form
# shows such a key only for those algorithms and resets it to its default for the others).
SYNTHETIC_DATASETS: tuple[str, ...] = tuple(getattr(engine_config, "SYNTHETIC_DATASETS", ()))
ALGORITHM_KEYS: dict[str, tuple[str, ...]] = dict(getattr(engine_config, "ALGORITHM_KEYS", {}))
INT_LIMIT = 2_147_483_647
SPIN_MIN_WIDTH = 72  # px; values longer than this scroll inside the spin box
# Keys that mean nothing for a synthetic task family (no text model, no data file, no label split):
# hidden while such a data set is picked. Those the config requires at their default there (the
# sinusoid MLP has no transformer layers) are reset to it.
TEXT_ONLY_KEYS: tuple[str, ...] = (
    "model", "max_length", "pooling", "adapt_layers", "train_layers", "gradient_checkpointing",
    "trust_remote_code", "text_column", "label_column", "n_way", "split_seed", "val_fraction",
    "test_fraction", "drop_small_labels", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
    "lora_layers")
_RESET_WHEN_SYNTHETIC = ("adapt_layers", "train_layers", "gradient_checkpointing")
# (group title, field names) in display order; fields the model gains later land in "Other".
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Base model", ("model", "max_length", "pooling", "adapt_layers", "train_layers", "gradient_checkpointing",
                    "trust_remote_code")),
    ("Tasks", ("dataset", "text_column", "label_column", "n_way", "k_shot", "q_query", "split_seed",
               "val_fraction", "test_fraction", "drop_small_labels")),
    ("Algorithm", ("algorithm", "first_order", "inner_lr", "inner_steps", "outer_lr", "meta_batch_size",
                   "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_layers")),
    ("Run", ("meta_iterations", "val_interval", "val_episodes", "checkpoint_interval", "plateau_threshold",
             "plateau_patience", "early_stopping_patience", "max_minutes", "seed", "device")),
)
LABELS = {
    "name": "Name", "model": "Base model", "max_length": "Max tokens", "pooling": "Pooling",
    "adapt_layers": "Adapted layers", "train_layers": "Trained layers", "trust_remote_code": "Trust remote code",
    "dataset": "Data set", "text_column": "Text column", "label_column": "Label column", "n_way": "N-way",
    "k_shot": "K-shot", "q_query": "Q-query", "split_seed": "Split seed", "val_fraction": "Val label fraction",
    "test_fraction": "Test label fraction", "drop_small_labels": "Drop small labels", "algorithm": "Algorithm",
    "inner_lr": "Inner LR", "inner_steps": "Inner steps", "outer_lr": "Outer LR",
    "meta_batch_size": "Meta-batch size", "meta_iterations": "Meta-iterations", "val_interval": "Validate every",
    "val_episodes": "Val episodes", "plateau_threshold": "Plateau threshold",
    "plateau_patience": "Plateau patience", "seed": "Seed", "device": "Device",
    "gradient_checkpointing": "Gradient checkpointing", "first_order": "First-order", "lora_r": "LoRA rank",
    "lora_alpha": "LoRA alpha", "lora_dropout": "LoRA dropout", "lora_target_modules": "LoRA modules",
    "lora_layers": "LoRA top layers",
    "checkpoint_interval": "Checkpoint every", "early_stopping_patience": "Early-stop patience",
    "max_minutes": "Time budget (min)",
}
FALLBACK_HELP = {
    "text_column": "Column of the data file holding the text.",
    "label_column": "Column of the data file holding the class label.",
    "algorithm": "The meta-learning algorithm (maml = second-order MAML, fomaml = first-order MAML, "
                 "protonet = prototypical networks, ...).",
    "val_fraction": "Fraction of the labels held out for meta-validation.",
    "test_fraction": "Fraction of the labels held out for meta-testing.",
    "seed": "Seed of the episode sampler and the model initialisation.",
    "device": "Where training runs; auto prefers CUDA, then Apple MPS, then the CPU.",
}


def field_help(name: str) -> str:
    """The tooltip of a config field: its pydantic description (or a fallback) and its key."""
    info = ExperimentConfig.model_fields.get(name)
    text = (info.description if info is not None else None) or FALLBACK_HELP.get(name, "")
    return f"{text}\nConfig key: {name}" if text else f"Config key: {name}"


def clean_message(message: str) -> str:
    """Tidy a cross-field error: drop pydantic's "Value error, " and a "(got {...whole config...})" tail."""
    message = re.sub(r"^Value error, ", "", message)
    message = re.sub(r"\s*\(got \{.*\}\)\.?$", "", message, flags=re.S)
    return message if message.endswith(".") else message + "."


def _bounds(name: str) -> tuple[int, int]:
    lo, hi = -INT_LIMIT, INT_LIMIT
    for m in ExperimentConfig.model_fields[name].metadata:
        lo = max(lo, int(getattr(m, "ge", lo)))
        hi = min(hi, int(getattr(m, "le", hi)))
    return lo, hi


def _looks_like_path(model: str) -> bool:
    """Mirror of the engine's rule for a ``model`` value that names a folder, not a hub id."""
    return (Path(model).expanduser().exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
            or "\\" in model)


def path_problem(name: str, value: str) -> str | None:
    """A live check of the ``dataset`` / ``model`` paths; the message, or None when fine."""
    value = value.strip()
    if name == "dataset" and value != "demo" and value not in SYNTHETIC_DATASETS and not value.startswith("hf:"):
        if not value:
            return "Pick a data file or use 'demo'."
        p = Path(value).expanduser()
        if not p.exists():
            return f"File '{p}' does not exist."
        if p.is_dir():
            return f"'{p.name}' is a folder; pick the .jsonl/.csv/.parquet file inside it."
        if p.suffix.lower() not in DATA_SUFFIXES:
            return f"Unsupported file type '{p.suffix}'; use {', '.join(DATA_SUFFIXES)}."
    if name == "model" and value != "bundled":
        if not value:
            return "Pick a model folder, type a Hugging Face id, or use 'bundled'."
        if _looks_like_path(value):
            p = Path(value).expanduser()
            if not p.exists():
                return f"Folder '{p}' does not exist."
            if not p.is_dir() or not (p / "config.json").is_file():
                return f"'{p.name}' holds no model (no config.json); pick a folder saved with save_pretrained()."
        elif not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", value):
            return f"'{value}' is neither a folder nor a Hugging Face model id."
    return None


ERROR_MAX_CHARS = 160  # a longer field error is cut at a word (with "…"); the label's tooltip has it whole


def elide_message(text: str, limit: int = ERROR_MAX_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, ending in "…" when cut."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"


class _FieldRow(QWidget):
    """An input widget with a red error label under it (long messages elided, whole in the tooltip)."""

    def __init__(self, editor: QWidget) -> None:
        super().__init__()
        self.editor = editor
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(1)
        lay.addWidget(editor)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #c62828; font-size: 11px;")
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()
        lay.addWidget(self.error)
        self.full_error = ""

    def set_error(self, text: str) -> None:
        self.full_error = text
        shown = elide_message(text)
        self.error.setText(shown)
        self.error.setToolTip(text if shown != text else "")
        self.error.setVisible(bool(text))
        self.editor.setStyleSheet("border: 1px solid #c62828;" if text and isinstance(self.editor, QLineEdit)
                                  else "")


class ExperimentForm(QWidget):
    """Edit an :class:`~engine.ExperimentConfig`, showing each invalid value next to its field.

    Args:
        config: the initial values (the defaults if None).
        devices: device names usable here (``engine.models.device.available_devices()``); the
            combo always lists auto/cpu/cuda/mps and marks the others "not available here".

    Signals:
        changed(): any field was edited (after re-validation).
        validityChanged(bool): the form became valid or invalid.
    """

    changed = Signal()
    validityChanged = Signal(bool)

    def __init__(self, config: ExperimentConfig | None = None, devices: list[str] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._base: dict[str, Any] = (config or ExperimentConfig()).to_dict()
        self._devices = list(devices) if devices is not None else list(ALL_DEVICES)
        self._rows: dict[str, _FieldRow] = {}
        self._layouts: dict[str, QFormLayout] = {}
        self._errors: dict[str, str] = {}
        self._external: dict[str, str] = {}
        self._valid = True
        self._loading = False
        self._last_choice: dict[str, str] = {}
        self._recommended_for = ("", "")  # (data set, algorithm) the recommended values were set up for
        self._boxes: dict[str, QGroupBox] = {}

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.general_error = QLabel()
        self.general_error.setWordWrap(True)
        self.general_error.setStyleSheet("color: #c62828;")
        self.general_error.hide()

        content = QWidget()
        col = QVBoxLayout(content)
        col.setContentsMargins(6, 6, 6, 6)
        col.setSpacing(8)
        top = QFormLayout()
        self._add_row(top, "name")
        col.addLayout(top)
        col.addWidget(self.general_error)
        placed = {"name"}
        groups = [(title, [f for f in names if f in ExperimentConfig.model_fields]) for title, names in GROUPS]
        placed.update(f for _, names in groups for f in names)
        other = [f for f in ExperimentConfig.model_fields if f not in placed]
        if other:
            groups.append(("Other", other))
        for title, names in groups:
            box = QGroupBox(title)
            form = QFormLayout(box)
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            for name in names:
                self._add_row(form, name)
            self._boxes[title] = box
            col.addWidget(box)
        col.addStretch(1)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        # Scroll only vertically: the form is never narrower than its fields (set below), so nothing is cut.
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(content)
        outer.addWidget(scroll)
        self.scroll_area = scroll
        self.set_config(config or ExperimentConfig())
        bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        self.setMinimumWidth(content.minimumSizeHint().width() + bar + 2)

    # ---- building -----------------------------------------------------------------------------
    def _make_editor(self, name: str) -> QWidget:
        ann = ExperimentConfig.model_fields[name].annotation
        if name == "model":
            return self._path_combo(name, ["bundled", BROWSE_FOLDER])
        if name == "dataset":
            return self._path_combo(name, ["demo", *SYNTHETIC_DATASETS, BROWSE_FILE])
        if name == "device":
            w = QComboBox()
            for dev in ALL_DEVICES:
                ok = dev in self._devices
                w.addItem(dev if ok else f"{dev} (not available here)", dev)
            w.currentIndexChanged.connect(self._on_edit)
            return w
        if name == "algorithm" or typing.get_origin(ann) is typing.Literal:
            w = QComboBox()
            for v in (ALGORITHMS if name == "algorithm" else typing.get_args(ann)):
                w.addItem(str(v), v)
            w.currentIndexChanged.connect(self._on_edit)
            return w
        if ann is bool:
            w = QCheckBox()
            w.toggled.connect(self._on_edit)
            return w
        if ann is int:
            w = QSpinBox()
            w.setRange(*_bounds(name))
            w.setAccelerated(True)
            w.setMinimumWidth(SPIN_MIN_WIDTH)  # not the width of "2147483647": the form must fit its panel
            w.valueChanged.connect(self._on_edit)
            return w
        w = QLineEdit()
        if ann is float:
            w.setPlaceholderText("a number, e.g. 0.001 or 1e-3")
        elif name == "name":
            w.setPlaceholderText("generated from the algorithm and data set")
        w.textChanged.connect(self._on_edit)
        return w

    def _path_combo(self, name: str, items: list[str]) -> QComboBox:
        w = QComboBox()
        w.setEditable(True)
        w.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        w.addItems(items)
        w.lineEdit().setPlaceholderText(
            "bundled, a model folder or a Hugging Face id" if name == "model"
            else "demo, a data file or hf:NAME[:CONFIG]")
        w.activated.connect(lambda _i, n=name: self._on_path_choice(n))
        w.editTextChanged.connect(self._on_edit)
        return w

    def _add_row(self, form: QFormLayout, name: str) -> None:
        editor = self._make_editor(name)
        if isinstance(editor, QComboBox):  # long entries (paths, "(not available here)") do not widen the form
            editor.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            editor.setMinimumContentsLength(6)
        editor.setObjectName(f"field_{name}")
        row = _FieldRow(editor)
        tip = field_help(name)
        editor.setToolTip(tip)
        label = QLabel(LABELS.get(name, name.replace("_", " ").capitalize()))
        label.setToolTip(tip)
        label.setBuddy(editor)
        self._rows[name] = row
        self._layouts[name] = form
        form.addRow(label, row)

    def _on_path_choice(self, name: str) -> None:
        combo: QComboBox = self._rows[name].editor  # type: ignore[assignment]
        text = combo.currentText()
        if text not in (BROWSE_FOLDER, BROWSE_FILE):
            return
        previous = self._last_choice.get(name, "bundled" if name == "model" else "demo")
        if name == "model":
            chosen = QFileDialog.getExistingDirectory(self, "Choose a model folder", "")
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, "Choose a data file", "", DATA_FILTER)
        combo.setEditText(chosen or previous)

    # ---- values -------------------------------------------------------------------------------
    def _read(self, name: str) -> Any:
        w = self._rows[name].editor
        if isinstance(w, QComboBox):
            return w.currentText().strip() if w.isEditable() else w.currentData()
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QSpinBox):
            return w.value()
        text = w.text()
        return text.strip() if ExperimentConfig.model_fields[name].annotation is float else text

    def _write(self, name: str, value: Any) -> None:
        w = self._rows[name].editor
        if isinstance(w, QComboBox):
            if w.isEditable():
                w.setEditText(str(value))
            else:
                idx = w.findData(value)
                w.setCurrentIndex(max(idx, 0))
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QSpinBox):
            w.setValue(int(value))
        elif isinstance(value, float):
            w.setText(f"{value:g}")
        else:
            w.setText("" if value is None else str(value))

    def values(self) -> dict[str, Any]:
        """The config dict as currently typed (not validated; float fields may hold raw text)."""
        data = dict(self._base)
        data.update({name: self._read(name) for name in self._rows})
        return data

    def set_config(self, config: ExperimentConfig) -> None:
        """Show ``config`` in the widgets (fields the form lacks are kept from it)."""
        self._base = config.to_dict()
        self._loading = True
        try:
            for name, row in self._rows.items():
                self._write(name, self._base[name])
                if isinstance(row.editor, QComboBox) and row.editor.isEditable():
                    self._last_choice[name] = str(self._base[name])
        finally:
            self._loading = False
        self._external.clear()
        # a loaded config's values are kept as they are
        self._recommended_for = (str(self._base.get("dataset", "")), str(self._base.get("algorithm", "")))
        self._apply_algorithm_keys()
        self.revalidate()

    def set_available_devices(self, devices: list[str]) -> None:
        """Mark which entries of the device drop-down work here (the others read "not available here")."""
        self._devices = list(devices)
        combo = self._rows["device"].editor if "device" in self._rows else None
        if not isinstance(combo, QComboBox):
            return
        for i in range(combo.count()):
            dev = combo.itemData(i)
            combo.setItemText(i, dev if dev in self._devices else f"{dev} (not available here)")

    def config(self) -> ExperimentConfig:
        """The validated config.

        Raises:
            ConfigError: a field is invalid (the first one; all are shown in the form).
        """
        cfg = validate_config(self.values())
        for name in ("dataset", "model"):
            problem = path_problem(name, getattr(cfg, name))
            if problem:
                raise ConfigError(problem, field=name)
        return cfg

    # ---- validation ---------------------------------------------------------------------------
    def _synthetic(self) -> bool:
        return "dataset" in self._rows and str(self._read("dataset")) in SYNTHETIC_DATASETS

    def _set_quietly(self, key: str, value: Any) -> None:
        loading, self._loading = self._loading, True
        try:
            self._write(key, value)
        finally:
            self._loading = loading

    def _is_default(self, key: str, value: Any) -> bool:
        """The field shows ``value`` (numbers compared as numbers: "0.50" is 0.5)."""
        current = self._read(key)
        try:
            return float(current) == float(value)
        except (TypeError, ValueError):
            return current == value

    def _apply_dataset_recommendations(self) -> None:
        """On a change of data set or algorithm: fields still at the general defaults take the values
        :func:`engine.config.recommended_overrides` gives for the new choice (sinusoid: the MAML paper's
        learning rates; lora_maml: a smaller inner lr); leaving it puts its values back to the defaults.
        Values the user typed are kept."""
        dataset = str(self._read("dataset")) if "dataset" in self._rows else ""
        algorithm = str(self._read("algorithm")) if "algorithm" in self._rows else ""
        if (dataset, algorithm) == self._recommended_for:
            return
        defaults = {n: f.default for n, f in ExperimentConfig.model_fields.items()}
        old = engine_config.recommended_overrides(*self._recommended_for)
        for key, value in old.items():  # back to the defaults where the old data set's values are untouched
            if key in self._rows and self._is_default(key, value):
                self._set_quietly(key, defaults[key])
        for key, value in engine_config.recommended_overrides(dataset, algorithm).items():
            if key in self._rows and self._is_default(key, defaults[key]):
                self._set_quietly(key, value)
        self._recommended_for = (dataset, algorithm)

    def _apply_algorithm_keys(self) -> None:
        """Show each field only where it applies: algorithm-specific keys for their algorithms, text keys
        (model, columns, N-way, label split...) only for text data sets. Hidden keys that the config
        requires at their default are reset to it."""
        synthetic = self._synthetic()
        for key, row in self._rows.items():
            shown = self.is_shown(key)
            needs_default = key in ALGORITHM_KEYS or (synthetic and key in _RESET_WHEN_SYNTHETIC)
            default = ExperimentConfig.model_fields[key].default
            if not shown and needs_default and self._read(key) != default:
                self._set_quietly(key, default)
            if self._layouts[key].isRowVisible(row) != shown:
                self._layouts[key].setRowVisible(row, shown)
        for box in self._boxes.values():  # a group with nothing to show goes too (Base model)
            box.setVisible(any(self.is_shown(n) for n in self._rows if self._layouts[n] is box.layout()))

    def is_shown(self, name: str) -> bool:
        """False for a field that does not apply: an algorithm-specific key the chosen algorithm does not
        use, or a text-only key (model, columns, N-way, label split...) with a synthetic data set."""
        if name not in self._rows:
            return False
        if name in TEXT_ONLY_KEYS and self._synthetic():
            return False
        algo = self._read("algorithm")
        return name not in ALGORITHM_KEYS or algo in ALGORITHM_KEYS[name]

    def _on_edit(self, *_args: Any) -> None:
        if self._loading:
            return
        self._apply_dataset_recommendations()
        self._apply_algorithm_keys()
        for name in ("model", "dataset"):
            text = self._read(name)
            if text not in (BROWSE_FOLDER, BROWSE_FILE):
                self._last_choice[name] = text
        self._external.clear()
        self.revalidate()
        self.changed.emit()

    def find_errors(self) -> tuple[dict[str, str], str]:
        """Every field error of the typed values, and any error that names no field."""
        data = self.values()
        errors: dict[str, str] = {}
        general = ""
        defaults = {n: f.default for n, f in ExperimentConfig.model_fields.items()}
        for _ in range(len(defaults) + 1):
            try:
                validate_config(data)
                break
            except ConfigError as err:
                text = err.message + (f" {err.hint}" if err.hint else "")
                field = err.field if err.field in self._rows else None
                if field is None:  # a cross-field rule: attach it to the first field it mentions
                    text = clean_message(err.message) + (f" {err.hint}" if err.hint else "")
                    named = [n for n in self._rows if re.search(rf"\b{n}\b", text)]
                    if named:
                        errors.setdefault(named[0], text)
                    else:
                        general = text
                    break
                if field in errors:  # cannot make progress (should not happen)
                    break
                errors[field] = text
                data[field] = defaults[field]
        for name in ("dataset", "model"):
            if name in self._rows and name not in errors:
                problem = path_problem(name, str(self._read(name)))
                if problem:
                    errors[name] = problem
        return errors, general

    def revalidate(self) -> bool:
        """Re-check every field, update the red labels; returns (and stores) validity."""
        errors, general = self.find_errors()
        self._errors = errors
        for name, row in self._rows.items():
            row.set_error(errors.get(name) or self._external.get(name, ""))
        self.general_error.setText(general)
        self.general_error.setVisible(bool(general))
        valid = not errors and not general
        if valid != self._valid:
            self._valid = valid
            self.validityChanged.emit(valid)
        return valid

    @property
    def valid(self) -> bool:
        """True when every field holds a valid value (external engine errors do not count)."""
        return self._valid

    def errors(self) -> dict[str, str]:
        """Field -> message of the problems shown now (live and engine-reported)."""
        out = dict(self._external)
        out.update(self._errors)
        return out

    def error_text(self, name: str) -> str:
        """The whole error message of a field ("" when none); see :meth:`shown_error_text`."""
        return self._rows[name].full_error

    def shown_error_text(self, name: str) -> str:
        """The red text under a field: :meth:`error_text`, elided to :data:`ERROR_MAX_CHARS` characters
        (the label's tooltip then holds the whole message)."""
        return self._rows[name].error.text()

    def set_external_error(self, field: str | None, text: str) -> bool:
        """Show an engine error under ``field``; False (and nothing shown) if the form lacks it."""
        if field not in self._rows:
            return False
        self._external[field] = text
        self._rows[field].set_error(self._errors.get(field) or text)
        self._rows[field].editor.setFocus()
        return True

    def editor(self, name: str) -> QWidget:
        """The input widget of a field (for tests and focus handling)."""
        return self._rows[name].editor

    def field_names(self) -> list[str]:
        """The config fields the form shows."""
        return list(self._rows)
