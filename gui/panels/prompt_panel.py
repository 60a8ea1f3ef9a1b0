"""Prompt panel: caption, lyrics, metas, LM constraints, models, parameters and the task buttons."""

from __future__ import annotations

import random
from typing import Any

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QAction
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.request import MAX_BATCH_SIZE, REPAINT_MODES, TRACK_NAMES
from gui.request_builder import ACTIONS, DEFAULT_DURATION_S, LM_FIELDS, LM_MODES, PromptValues
from gui.theme import icon

STRUCTURE_TAGS = ("[Intro]", "[Verse]", "[Pre-Chorus]", "[Chorus]", "[Bridge]", "[Breakdown]",
                  "[Outro]", "[Instrumental]")
LANGUAGES = ("unknown", "en", "zh", "ja", "ko", "es", "fr", "de", "it", "pt", "ru", "nl", "sv", "pl", "tr", "ar",
             "hi")
DIT_CHOICES = ("acestep-v15-turbo", "acestep-v15-turbo-shift1", "acestep-v15-turbo-shift3",
               "acestep-v15-turbo-continuous", "acestep-v15-sft", "acestep-v15-base",
               "acestep-v15-xl-turbo", "acestep-v15-xl-sft", "acestep-v15-xl-base")
LM_CHOICES = ("none", "0.6B", "1.7B", "4B")
DEFAULT_STEMS = ("drums", "bass", "vocals")
ACTION_LABELS = {
    "generate": "Generate",
    "repaint": "Repaint",
    "continue": "Continue",
    "cover": "Cover",
    "stems": "Stems",
    "extract": "Extract",
}
ACTION_SHORTCUTS = {action: f"Ctrl+{n}" for n, action in enumerate(ACTIONS, start=1) if n <= 9}
LYRICS_HELP = ("Structure tags on their own line steer the arrangement: [Intro], [Verse], [Pre-Chorus], "
               "[Chorus], [Bridge], [Breakdown], [Outro]. Use [Instrumental] alone for no vocals.")
CANDIDATE_HINTS = {
    "bpm": "range, e.g. 118-124",
    "duration": "seconds, e.g. 60-90",
    "keyscale": "e.g. A minor, C major",
    "language": "e.g. en, de",
    "timesignature": "e.g. 3, 4",
}


class ConstraintEditor(QWidget):
    """Per LM field: known (send the value), free (let the LM choose) or a candidate set."""

    def __init__(self, parent=None):
        super().__init__(parent)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        self.modes: dict[str, QComboBox] = {}
        self.candidates: dict[str, QLineEdit] = {}
        for row, name in enumerate(LM_FIELDS):
            mode = QComboBox()
            mode.addItems(LM_MODES)
            mode.setObjectName(f"lm_mode_{name}")
            text = QLineEdit()
            text.setPlaceholderText(CANDIDATE_HINTS[name])
            text.setEnabled(False)
            mode.currentTextChanged.connect(lambda value, edit=text: edit.setEnabled(value == "candidates"))
            grid.addWidget(QLabel(name), row, 0)
            grid.addWidget(mode, row, 1)
            grid.addWidget(text, row, 2)
            self.modes[name] = mode
            self.candidates[name] = text

    def set_mode(self, name: str, mode: str, candidates: str = "") -> None:
        self.modes[name].setCurrentText(mode)
        self.candidates[name].setText(candidates)

    def values(self) -> tuple[dict[str, str], dict[str, str]]:
        modes = {name: combo.currentText() for name, combo in self.modes.items()}
        texts = {name: edit.text() for name, edit in self.candidates.items() if modes[name] == "candidates"}
        return modes, texts


class LoraPicker(QWidget):
    """A LoRA adapter (from checkpoints/loras on the engine) and its strength, for each request.

    "engine default" sends no field (the adapter set on the engine, e.g. by the VST's LoRA panel,
    applies); "none" sends `lora: ""`; a name sends `lora` and `lora_scale`.
    """

    DEFAULT, NONE = "engine default", "none"

    def __init__(self, parent=None):
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setObjectName("lora_combo")
        self.combo.addItems([self.DEFAULT, self.NONE])
        self.combo.setToolTip("LoRA adapter on the DiT (folders in checkpoints/loras on the engine)")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("lora_scale")
        self.slider.setRange(0, 100)
        self.slider.setValue(100)
        self.slider.setToolTip("LoRA strength (0 = off, 1 = as trained)")
        self.scale_label = QLabel("1.00")
        self.slider.valueChanged.connect(lambda value: self.scale_label.setText(f"{value / 100:.2f}"))
        self.combo.currentTextChanged.connect(self._enable_scale)
        row.addWidget(self.combo, 2)
        row.addWidget(self.slider, 1)
        row.addWidget(self.scale_label)
        self._enable_scale(self.combo.currentText())

    def _enable_scale(self, text: str) -> None:
        self.slider.setEnabled(text not in (self.DEFAULT, self.NONE))

    def set_available(self, names: list[str]) -> None:
        current = self.combo.currentText()
        self.combo.clear()
        self.combo.addItems([self.DEFAULT, self.NONE] + [n for n in names if n not in (self.DEFAULT, self.NONE)])
        self.combo.setCurrentText(current if self.combo.findText(current) >= 0 else self.DEFAULT)

    def set_choice(self, name: str | None, scale: float | None) -> None:
        text = self.DEFAULT if name is None else (name or self.NONE)
        if self.combo.findText(text) < 0:
            self.combo.addItem(text)
        self.combo.setCurrentText(text)
        if scale is not None:
            self.slider.setValue(int(round(float(scale) * 100)))

    def choice(self) -> tuple[str | None, float | None]:
        """(lora, lora_scale) request fields; None = leave the field out."""
        text = self.combo.currentText()
        if text == self.DEFAULT:
            return None, None
        if text == self.NONE:
            return "", None
        return text, self.slider.value() / 100


class _FileField(QWidget):
    def __init__(self, placeholder: str, parent=None):
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        browse = QToolButton()
        browse.setIcon(icon("browse"))
        browse.setToolTip("Choose an audio file")
        browse.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 1)
        layout.addWidget(browse)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose audio", "", "Audio (*.wav *.flac *.mp3 *.ogg *.aif*)")
        if path:
            self.edit.setText(path)

    def text(self) -> str:
        return self.edit.text().strip()


class PromptPanel(QWidget):
    """Everything the musician sets before pressing a task button."""

    action_requested = pyqtSignal(str)          # one of ACTIONS
    load_models_requested = pyqtSignal(str, object)  # dit, lm (None = no LM)

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._build_prompt_box(), 1)
        layout.addWidget(self._build_model_box())
        # Built here (they read and feed this panel) but placed by the main window in its
        # columns, so the common controls fit a 1280x800 screen without scrolling.
        self.params_box = self._build_params_box()
        self.lm_box = self._build_lm_box()
        self.tasks_box = self._build_tasks_box()

    # ---------------------------------------------------------------- boxes
    def _build_prompt_box(self) -> QGroupBox:
        box = QGroupBox("Prompt")
        form = QFormLayout(box)
        self.caption = QPlainTextEdit()
        self.caption.setPlaceholderText("Describe the music: genre, instruments, mood, production…")
        self.caption.setMinimumHeight(48)
        self.caption.setMaximumHeight(80)
        self.lyrics = QPlainTextEdit("[Instrumental]")
        self.lyrics.setToolTip(LYRICS_HELP)
        self.lyrics.setMinimumHeight(64)
        tags = QGridLayout()
        tags.setSpacing(2)
        for n, tag in enumerate(STRUCTURE_TAGS):
            button = QToolButton()
            button.setText(tag.strip("[]"))
            button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            button.setToolTip(f"Insert {tag} on a new line. {LYRICS_HELP}")
            button.clicked.connect(lambda _=False, t=tag: self.insert_tag(t))
            tags.addWidget(button, n // 4, n % 4)
        self.language = QComboBox()
        self.language.addItems(LANGUAGES)
        self.duration = QDoubleSpinBox()
        self.duration.setRange(0.0, 600.0)
        self.duration.setSuffix(" s")
        self.duration.setSpecialValueText(f"selection, else {DEFAULT_DURATION_S:.0f} s")
        self.duration.setToolTip("Length of a new take. At the lowest setting: the DAW selection's length, "
                                 f"or {DEFAULT_DURATION_S:.0f} s without a selection.")
        form.addRow("Caption", self.caption)
        form.addRow("Lyrics", self.lyrics)
        form.addRow(_wrap(tags))
        form.addRow("Language", self.language)
        form.addRow("Duration", self.duration)
        return box

    def _build_lm_box(self) -> QGroupBox:
        box = QGroupBox("LM planner")
        layout = QVBoxLayout(box)
        self.thinking = QCheckBox("Plan with the 5 Hz LM (needs an LM loaded)")
        self.thinking.setToolTip("Known: send the value. Free: let the LM choose. Candidates: the LM "
                                 "chooses among the values typed.")
        self.constraints = ConstraintEditor()
        layout.addWidget(self.thinking)
        layout.addWidget(self.constraints)
        return box

    def _build_model_box(self) -> QGroupBox:
        box = QGroupBox("Models")
        grid = QGridLayout(box)
        self.dit_combo = QComboBox()
        self.dit_combo.addItems(DIT_CHOICES)
        self.lm_combo = QComboBox()
        self.lm_combo.addItems(LM_CHOICES)
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("Switch the engine to these models (POST /v1/models/load)")
        self.load_button.clicked.connect(self._request_load)
        self.loaded_label = QLabel("")
        self.loaded_label.setObjectName("hint")
        grid.addWidget(QLabel("DiT"), 0, 0)
        grid.addWidget(self.dit_combo, 0, 1, 1, 2)
        grid.addWidget(QLabel("LM"), 1, 0)
        grid.addWidget(self.lm_combo, 1, 1)
        grid.addWidget(self.load_button, 1, 2)
        grid.addWidget(self.loaded_label, 2, 1, 1, 2)
        self.lora = LoraPicker()
        grid.addWidget(QLabel("LoRA"), 3, 0)
        grid.addWidget(self.lora, 3, 1, 1, 2)
        grid.setColumnStretch(1, 1)
        return box

    def _build_params_box(self) -> QGroupBox:
        box = QGroupBox("Parameters")
        grid = QGridLayout(box)
        self.steps = QSpinBox()
        self.steps.setRange(0, 200)
        self.steps.setSpecialValueText("auto")
        self.steps.setToolTip("Sampler steps; auto = 8 for turbo, 50 for base/sft")
        self.shift = _spin(0.01, 20.0, 3.0, 2)
        self.guidance = _spin(0.0, 30.0, 7.0, 1)
        self.guidance.setToolTip("Classifier-free guidance (ignored by turbo models)")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2 ** 31 - 1)
        self.seed_lock = QCheckBox("lock")
        self.seed_lock.setToolTip("Locked: use this seed. Unlocked: a new random seed each time.")
        dice = QToolButton()
        dice.setIcon(icon("seed"))
        dice.setObjectName("new_seed")
        dice.setToolTip("New random seed")
        dice.clicked.connect(lambda: self.seed.setValue(random.randrange(2 ** 31)))
        self.batch = QSpinBox()
        self.batch.setRange(1, MAX_BATCH_SIZE)
        self.cover_strength = _spin(0.0, 1.0, 1.0, 2, 0.05)
        self.repaint_mode = QComboBox()
        self.repaint_mode.addItems(REPAINT_MODES)
        self.repaint_mode.setCurrentText("balanced")
        self.repaint_strength = _spin(0.0, 1.0, 0.5, 2, 0.05)
        self.region_start = _spin(0.0, 600.0, 0.0, 2)
        self.region_end = _spin(0.0, 600.0, 0.0, 2)
        self.region_end.setSpecialValueText("—")
        self.source = _FileField("source audio when no DAW selection is used")
        self.reference = _FileField("optional style reference audio")

        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.seed_lock)
        seed_row.addWidget(dice)
        region_row = QHBoxLayout()
        region_row.addWidget(self.region_start)
        region_row.addWidget(QLabel("to"))
        region_row.addWidget(self.region_end)
        self.cover_strength.setToolTip("Cover: how long the source's structure steers (1 = all the way)")
        self.repaint_strength.setToolTip("Repaint: how far the new region may move from the original")
        repaint_row = QHBoxLayout()
        repaint_row.addWidget(self.repaint_mode, 1)
        repaint_row.addWidget(self.repaint_strength)
        cells = [("Steps", self.steps), ("Shift", self.shift), ("Guidance", self.guidance),
                 ("Batch", self.batch)]
        for n, (title, widget) in enumerate(cells):
            grid.addWidget(QLabel(title), n // 2, (n % 2) * 2)
            grid.addWidget(widget, n // 2, (n % 2) * 2 + 1)
        rows = [("Seed", _wrap(seed_row)), ("Cover", self.cover_strength), ("Repaint", _wrap(repaint_row)),
                ("Source", self.source), ("Region (s)", _wrap(region_row)), ("Reference", self.reference)]
        for n, (title, widget) in enumerate(rows, start=2):
            grid.addWidget(QLabel(title), n, 0)
            grid.addWidget(widget, n, 1, 1, 3)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        return box

    def _build_tasks_box(self) -> QGroupBox:
        """One button per entry of ACTIONS, three to a row; a new task needs only its ACTIONS entry
        and a label in ACTION_LABELS. The stem and track pickers sit below the buttons."""
        box = QGroupBox("Tasks")
        outer = QVBoxLayout(box)
        grid = QGridLayout()
        grid.setSpacing(6)
        outer.addLayout(grid)
        self.task_buttons: dict[str, QPushButton] = {}
        for n, action in enumerate(ACTIONS):
            label = ACTION_LABELS.get(action, action.replace("_", " ").capitalize())
            button = QPushButton(label)
            button.setObjectName(f"task_{action}")
            button.setProperty("task", True)
            shortcut = ACTION_SHORTCUTS.get(action)
            button.setToolTip(f"{label} ({shortcut})" if shortcut else label)
            if action == "generate":
                button.setDefault(True)
            button.clicked.connect(lambda _=False, a=action: self.action_requested.emit(a))
            grid.addWidget(button, n // 3, n % 3)
            self.task_buttons[action] = button
        self.stems_button = QToolButton()
        self.stems_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.stems_button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.stems_button.setToolTip("Stems: one new track per ticked stem, split from the selection")
        menu = QMenu(self.stems_button)
        self.stem_actions: dict[str, QAction] = {}
        for name in TRACK_NAMES:
            action = menu.addAction(name)
            action.setCheckable(True)
            action.setChecked(name in DEFAULT_STEMS)
            action.toggled.connect(self._show_stems)
            self.stem_actions[name] = action
        self.stems_button.setMenu(menu)
        self._show_stems()
        self.track = QComboBox()
        self.track.addItems(TRACK_NAMES)
        self.track.setCurrentText("vocals")
        self.track.setToolTip("Extract: the track to pull out of the mix")
        # the pickers sit under their buttons (Stems, Extract); a new task button flows after them
        stems_at = list(ACTIONS).index("stems") if "stems" in ACTIONS else 4
        extract_at = list(ACTIONS).index("extract") if "extract" in ACTIONS else 5
        picker_row = (len(ACTIONS) + 2) // 3
        grid.addWidget(self.stems_button, picker_row, stems_at % 3)
        grid.addWidget(self.track, picker_row, extract_at % 3)
        for column in range(3):
            grid.setColumnStretch(column, 1)
        return box

    # --------------------------------------------------------------- values
    def insert_tag(self, tag: str) -> None:
        cursor = self.lyrics.textCursor()
        if self.lyrics.toPlainText().strip() == "[Instrumental]" and tag != "[Instrumental]":
            self.lyrics.clear()
            cursor = self.lyrics.textCursor()
        prefix = "" if cursor.atBlockStart() else "\n"
        cursor.insertText(f"{prefix}{tag}\n")
        self.lyrics.setTextCursor(cursor)

    def values(self) -> PromptValues:
        modes, texts = self.constraints.values()
        lora, lora_scale = self.lora.choice()
        region = None
        if self.region_end.value() > self.region_start.value():
            region = (self.region_start.value(), self.region_end.value())
        return PromptValues(
            caption=self.caption.toPlainText(),
            lyrics=self.lyrics.toPlainText(),
            vocal_language=self.language.currentText(),
            duration=self.duration.value(),
            inference_steps=self.steps.value(),
            shift=self.shift.value(),
            guidance_scale=self.guidance.value(),
            seed=self.seed.value() if self.seed_lock.isChecked() else None,
            batch_size=self.batch.value(),
            audio_cover_strength=self.cover_strength.value(),
            repaint_mode=self.repaint_mode.currentText(),
            repaint_strength=self.repaint_strength.value(),
            src_audio=self.source.text(),
            reference_audio=self.reference.text(),
            region=region,
            track_name=self.track.currentText(),
            stems=self.stems(),
            thinking=self.thinking.isChecked(),
            lm_modes=modes,
            lm_candidates=texts,
            lora=lora,
            lora_scale=lora_scale,
        )

    def recall(self, request: dict[str, Any], seed: int | None) -> None:
        """Put a finished variant's settings back into the form, with its seed locked."""
        self.caption.setPlainText(str(request.get("caption", "")))
        self.lyrics.setPlainText(str(request.get("lyrics", "[Instrumental]")))
        self.language.setCurrentText(str(request.get("vocal_language") or "unknown"))
        self.steps.setValue(int(request.get("inference_steps") or 0))
        self.shift.setValue(float(request.get("shift", 3.0)))
        self.guidance.setValue(float(request.get("guidance_scale", 7.0)))
        self.batch.setValue(1)
        self.cover_strength.setValue(float(request.get("audio_cover_strength", 1.0)))
        self.repaint_mode.setCurrentText(str(request.get("repaint_mode", "balanced")))
        self.repaint_strength.setValue(float(request.get("repaint_strength", 0.5)))
        if request.get("track_name"):
            self.track.setCurrentText(request["track_name"])
        if request.get("dit"):
            self.dit_combo.setCurrentText(request["dit"])
        self.thinking.setChecked(bool(request.get("thinking")))
        self.lora.set_choice(request.get("lora"), request.get("lora_scale"))
        if seed is not None:
            self.seed.setValue(int(seed) % (2 ** 31))
            self.seed_lock.setChecked(True)

    def show_loaded_models(self, dit: str | None, lm: str | None) -> None:
        self.loaded_label.setText(f"loaded: {dit or '?'} + {lm or 'no LM'}")
        if dit:
            if self.dit_combo.findText(dit) < 0:
                self.dit_combo.addItem(dit)
            self.dit_combo.setCurrentText(dit)

    def set_available_dits(self, names: list[str]) -> None:
        current = self.dit_combo.currentText()
        self.dit_combo.clear()
        self.dit_combo.addItems(names or list(DIT_CHOICES))
        self.dit_combo.setCurrentText(current)

    def set_available_loras(self, names: list[str]) -> None:
        self.lora.set_available(names)

    def stems(self) -> tuple[str, ...]:
        return tuple(name for name, action in self.stem_actions.items() if action.isChecked())

    def set_stems(self, names) -> None:
        for name, action in self.stem_actions.items():
            action.setChecked(name in names)

    def _show_stems(self, *_) -> None:
        chosen = self.stems()
        self.stems_button.setText(chosen[0] if len(chosen) == 1 else f"{len(chosen)} stems" if chosen else "no stems")
        self.stems_button.setToolTip("Stems: one new track per ticked stem, split from the selection"
                                     + (f"\nTicked: {', '.join(chosen)}" if chosen else ""))

    def set_available_lms(self, folders: list[str]) -> None:
        """LM sizes plus any LM folders the engine found (e.g. acestep-5Hz-lm-0.6B)."""
        current = self.lm_combo.currentText()
        self.lm_combo.clear()
        self.lm_combo.addItems(list(LM_CHOICES) + [f for f in folders if f not in LM_CHOICES])
        self.lm_combo.setCurrentText(current)

    def _request_load(self) -> None:
        lm = self.lm_combo.currentText()
        self.load_models_requested.emit(self.dit_combo.currentText(), None if lm == "none" else lm)


def _spin(low: float, high: float, value: float, decimals: int, step: float = 0.1) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(low, high)
    spin.setDecimals(decimals)
    spin.setSingleStep(step)
    spin.setValue(value)
    return spin


def _wrap(layout) -> QWidget:
    widget = QWidget()
    layout.setContentsMargins(0, 0, 0, 0)
    widget.setLayout(layout)
    return widget
