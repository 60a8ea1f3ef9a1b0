"""Host panel: adapter connections, tempo / meter / key (follow host or override), the selection."""

from __future__ import annotations

import math
import time
from typing import Any

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QWidget

from engine.request import TIME_SIGNATURES
from gui.request_builder import HostValues

ADAPTERS = (("reaper", "REAPER"), ("ableton", "Ableton"), ("midi", "MIDI clock"), ("engine", "Engine"))
KEY_NAMES = [f"{note} {mode}" for mode in ("major", "minor")
             for note in ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")]
METER_CHOICES = ["2/4", "3/4", "4/4", "6/8"]  # the model knows 2, 3, 4 and 6 beats per bar (numerator only)
UNKNOWN = "unknown"  # shown, and sent as "not given", while no host reports a value and none is typed


def meter_known(meter: str) -> bool:
    return meter.partition("/")[0] in TIME_SIGNATURES

# Names a host-state snapshot may use for each value (the bridge's own names come first).
_TEMPO_KEYS = ("tempo_bpm", "tempo", "bpm")
_METER_KEYS = ("meter", "time_signature", "timesignature")
_KEY_KEYS = ("key", "keyscale", "key_scale")
_SELECTION_KEYS = ("region_s", "selection", "selection_s", "region")
_SELECTION_QN_KEYS = ("region_qn",)


def snapshot_value(snapshot: dict[str, Any], names: tuple[str, ...]) -> Any:
    """The first present value among `names`; `{"value": v, "source": ..}` entries are unwrapped."""
    for name in names:
        if name in snapshot:
            value = snapshot[name]
            if isinstance(value, dict) and "value" in value:
                value = value["value"]
            if value is not None:
                return value
    return None


def meter_text(meter: Any) -> str:
    """'3/4' from (3, 4), [3, 4], {'numerator': 3, 'denominator': 4}, '3/4' or 3."""
    if meter is None:
        return ""
    if isinstance(meter, dict):
        meter = (meter.get("numerator"), meter.get("denominator", 4))
    if isinstance(meter, (list, tuple)) and len(meter) == 2 and all(meter):
        return f"{int(meter[0])}/{int(meter[1])}"
    text = str(meter).strip()
    return text if "/" in text or not text else f"{text}/4"


def selection_seconds(value: Any, snapshot: dict[str, Any]) -> tuple[float, float] | None:
    """Selection as (start_s, end_s) from a tuple, a dict or separate start/end keys."""
    if isinstance(value, dict):
        start = value.get("start_s", value.get("start"))
        end = value.get("end_s", value.get("end"))
        value = (start, end)
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        start = snapshot_value(snapshot, ("selection_start_s", "loop_start_s", "region_start_s"))
        end = snapshot_value(snapshot, ("selection_end_s", "loop_end_s", "region_end_s"))
        value = (start, end)
    try:
        start, end = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        return None
    return start, end


def bars_beats(beats: float, beats_per_bar: int) -> str:
    """'5.1' style position (bar.beat, both counted from 1) from beats since the start."""
    bar, beat = divmod(beats + 1e-6, beats_per_bar)
    return f"{int(bar) + 1}.{int(beat) + 1}"


class _FollowField(QWidget):
    """A value editor plus a 'follow host' toggle: following shows the host's value read-only."""

    changed = pyqtSignal()

    def __init__(self, editor: QWidget, parent=None):
        super().__init__(parent)
        self.editor = editor
        self.follow = QCheckBox("follow")
        self.follow.setChecked(True)
        self.follow.setToolTip("On: take the value from the DAW. Off: use the value typed here.")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(editor, 1)
        layout.addWidget(self.follow)
        self.follow.toggled.connect(self._on_toggle)
        self._on_toggle(True)

    def _on_toggle(self, following: bool) -> None:
        self.editor.setEnabled(not following)
        self.changed.emit()


class HostPanel(QGroupBox):
    """Shows what the DAW reports and decides which metas a request gets."""

    values_changed = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__("Host", parent)
        self.snapshot: dict[str, Any] = {}
        self._status_labels: dict[str, QLabel] = {}
        self._status: dict[str, dict[str, Any]] = {}

        grid = QGridLayout(self)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(4)
        status_row = QHBoxLayout()
        status_row.setSpacing(4)
        self._status_dots: dict[str, QLabel] = {}
        for name, title in ADAPTERS:
            dot = QLabel()
            dot.setObjectName("dot")
            label = QLabel(title)
            label.setObjectName(f"adapter_{name}")
            self._status_dots[name] = dot
            self._status_labels[name] = label
            status_row.addWidget(dot)
            status_row.addWidget(label)
            status_row.addSpacing(10)
            self._set_status_label(name, title, False, None)
        status_row.addStretch(1)
        grid.addLayout(status_row, 0, 0, 1, 4)

        self.tempo_spin = QDoubleSpinBox()
        self.tempo_spin.setRange(0.0, 300.0)  # 0 = unknown (the model's own choice)
        self.tempo_spin.setDecimals(2)
        self.tempo_spin.setSuffix(" BPM")
        self.tempo_spin.setSpecialValueText(UNKNOWN)
        self.tempo_spin.setValue(0.0)
        self.tempo = _FollowField(self.tempo_spin)
        self.meter_combo = QComboBox()
        self.meter_combo.addItem(UNKNOWN)
        self.meter_combo.addItems(METER_CHOICES)
        self.meter = _FollowField(self.meter_combo)
        self.key_combo = QComboBox()
        self.key_combo.addItem(UNKNOWN)
        self.key_combo.addItems(KEY_NAMES)
        self.key = _FollowField(self.key_combo)
        self.host_meter_note = QLabel()
        self.host_meter_note.setObjectName("hint")
        self.host_meter_note.setWordWrap(True)
        self.host_meter_note.hide()
        self.selection_label = QLabel("no selection")
        self.selection_label.setObjectName("selection")
        self.selection_label.setToolTip("The DAW's time selection (REAPER) or loop (Ableton): bars.beats and "
                                        "seconds")

        for row, (title, widget) in enumerate((("Tempo", self.tempo), ("Meter", self.meter),
                                               ("Key", self.key)), start=1):
            grid.addWidget(QLabel(title), row, 0)
            grid.addWidget(widget, row, 1, 1, 3)
        grid.addWidget(self.host_meter_note, 4, 1, 1, 3)
        grid.addWidget(QLabel("Selection"), 5, 0)
        grid.addWidget(self.selection_label, 5, 1, 1, 3)
        grid.setColumnStretch(1, 1)

        for field in (self.tempo, self.meter, self.key):
            field.changed.connect(self._refresh)
        self.tempo_spin.valueChanged.connect(self._refresh)
        self.meter_combo.currentIndexChanged.connect(self._refresh)
        self.key_combo.currentIndexChanged.connect(self._refresh)
        self._refresh()

    # ------------------------------------------------------------- adapters
    def set_adapters_status(self, status: dict[str, dict[str, Any]]) -> None:
        """`BridgeApp.adapters_status()` shape: {name: {"connected": bool, "last_seen": float|None}}."""
        for name, title in ADAPTERS:
            if name == "engine" or name not in status:
                continue
            entry = status[name] or {}
            self._set_status_label(name, title, bool(entry.get("connected")), entry.get("last_seen"),
                                   str(entry.get("error") or ""))

    def set_engine_status(self, connected: bool, detail: str = "") -> None:
        self._set_status_label("engine", "Engine", connected, None, detail)

    def adapter_connected(self, name: str) -> bool:
        return bool(self._status.get(name, {}).get("connected"))

    def _set_status_label(self, name: str, title: str, connected: bool, last_seen: float | None,
                          detail: str = "") -> None:
        self._status[name] = {"connected": connected, "last_seen": last_seen}
        label = self._status_labels[name]
        dot = self._status_dots[name]
        dot.setProperty("connected", connected)
        dot.setProperty("problem", bool(detail) and not connected)
        dot.style().unpolish(dot)
        dot.style().polish(dot)
        if connected:
            tip = f"{title}: connected"
        elif last_seen:
            tip = f"{title}: not connected (last heard {max(0, time.time() - last_seen):.0f} s ago)"
        else:
            tip = f"{title}: not connected"
        label.setToolTip(tip + (f"\n{detail}" if detail else ""))
        dot.setToolTip(label.toolTip())
        label.setProperty("connected", connected)

    # ----------------------------------------------------------- host state
    def apply_snapshot(self, snapshot: dict[str, Any]) -> None:
        """Take tempo, meter, key and selection from a `HostState.snapshot()`."""
        self.snapshot = dict(snapshot or {})
        tempo = snapshot_value(self.snapshot, _TEMPO_KEYS)
        if self.tempo.follow.isChecked() and isinstance(tempo, (int, float)) and 30 <= tempo <= 300:
            self.tempo_spin.blockSignals(True)
            self.tempo_spin.setValue(float(tempo))
            self.tempo_spin.blockSignals(False)
        meter = meter_text(snapshot_value(self.snapshot, _METER_KEYS))
        if meter:
            known = meter_known(meter)
            self.host_meter_note.setText("" if known else f"host meter {meter}: the model knows 2, 3, 4 and 6 "
                                                          "beats per bar; sent as unknown")
            self.host_meter_note.setVisible(not known)
            if self.meter.follow.isChecked() and known:
                self.meter_combo.blockSignals(True)
                if self.meter_combo.findText(meter) < 0:
                    self.meter_combo.addItem(meter)  # e.g. 6/4 or 3/8: same numerator, kept as the host says
                self.meter_combo.setCurrentText(meter)
                self.meter_combo.blockSignals(False)
        key = snapshot_value(self.snapshot, _KEY_KEYS)
        if self.key.follow.isChecked() and isinstance(key, str):
            self.key_combo.blockSignals(True)
            index = self.key_combo.findText(_canonical_key(key))
            self.key_combo.setCurrentIndex(max(0, index))
            self.key_combo.blockSignals(False)
        self._refresh()

    def host_meter(self) -> str:
        return meter_text(snapshot_value(self.snapshot, _METER_KEYS))

    def values(self) -> HostValues:
        """The metas to send: a field shown as "unknown" is not sent (the model chooses)."""
        meter = self.meter_combo.currentText()
        if meter == UNKNOWN:
            meter = ""
        if self.meter.follow.isChecked() and self.host_meter() and not meter_known(self.host_meter()):
            meter = ""  # e.g. 7/8: sent as unknown rather than as a wrong meter
        key = self.key_combo.currentText()
        return HostValues(bpm=self.tempo_spin.value() or None, timesignature=meter.partition("/")[0],
                          keyscale="" if key == UNKNOWN else key, selection=self.selection())

    def following(self) -> dict[str, bool]:
        """Which values follow the host (the rest are manual overrides)."""
        return {"tempo": self.tempo.follow.isChecked(), "meter": self.meter.follow.isChecked(),
                "key": self.key.follow.isChecked()}

    def position_s(self) -> float | None:
        value = snapshot_value(self.snapshot, ("position_s",))
        return float(value) if isinstance(value, (int, float)) else None

    def selection(self) -> tuple[float, float] | None:
        return selection_seconds(snapshot_value(self.snapshot, _SELECTION_KEYS), self.snapshot)

    def _selection_beats(self, selection: tuple[float, float]) -> tuple[float, float, int]:
        """Start and end in beats of the meter's unit, and beats per bar.

        The host's own quarter-note positions are used when it sends them (exact under tempo
        changes); otherwise the seconds are converted at the tempo shown.
        """
        meter = self.host_meter() if self.meter.follow.isChecked() and self.host_meter() else \
            self.meter_combo.currentText()
        if "/" not in meter:
            meter = "4/4"  # unknown: count bars of four for the display only
        numerator, _, denominator = meter.partition("/")
        beats_per_bar = max(1, int(numerator or 4))
        beat_unit_qn = 4.0 / max(1, int(denominator or 4))  # a beat of 6/8 is half a quarter note
        span_qn = snapshot_value(self.snapshot, _SELECTION_QN_KEYS)
        if isinstance(span_qn, (list, tuple)) and len(span_qn) == 2:
            return float(span_qn[0]) / beat_unit_qn, float(span_qn[1]) / beat_unit_qn, beats_per_bar
        quarter_notes_per_s = (self.tempo_spin.value() or 120.0) / 60.0
        return (selection[0] * quarter_notes_per_s / beat_unit_qn,
                selection[1] * quarter_notes_per_s / beat_unit_qn, beats_per_bar)

    def _refresh(self) -> None:
        selection = self.selection()
        if selection is None:
            self.selection_label.setText("no selection")
        else:
            start, end = selection
            seconds = f"{start:.2f} – {end:.2f} s ({end - start:.2f} s)"
            if self.tempo_spin.value() or snapshot_value(self.snapshot, _SELECTION_QN_KEYS):
                start_beats, end_beats, beats_per_bar = self._selection_beats(selection)
                seconds = (f"{bars_beats(start_beats, beats_per_bar)} – {bars_beats(end_beats, beats_per_bar)}"
                           f"   {seconds}")
            self.selection_label.setText(seconds)
        self.values_changed.emit()


def _canonical_key(text: str) -> str:
    """'a minor' / 'A min' / 'A# Minor' -> the spelling used in KEY_NAMES ('Bb minor')."""
    parts = text.replace("♯", "#").replace("♭", "b").split()
    if len(parts) != 2:
        return ""
    note, mode = parts[0][:1].upper() + parts[0][1:], parts[1].lower()
    mode = "minor" if mode.startswith("min") else "major" if mode.startswith("maj") else mode
    sharps_to_flats = {"D#": "Eb", "G#": "Ab", "A#": "Bb", "Db": "C#", "Gb": "F#"}
    note = sharps_to_flats.get(note, note)
    return f"{note} {mode}"
