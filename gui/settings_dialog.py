"""The settings dialog: engine URL and token, OSC and MIDI ports, output folder, audio device."""

from __future__ import annotations

import dataclasses

from PyQt6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gui.settings import Settings
from gui.theme import icon

HOST_CHOICES = ("auto", "reaper", "ableton", "midi")
PORT_FIELDS = (  # Settings field, label; the bridge needs a restart to use new ports
    ("osc_command_port", "Bridge command port (OSC)"),
    ("reaper_listen_port", "REAPER feedback port"),
    ("reaper_send_port", "REAPER control port"),
    ("ableton_send_port", "AbletonOSC port"),
    ("ableton_listen_port", "AbletonOSC reply port"),
)


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, audio_devices: list[str], midi_ports: list[str] | None = None,
                 parent=None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(620)
        self._original = settings
        self.engine_url = QLineEdit(settings.engine_url)
        self.engine_token = QLineEdit(settings.engine_token)
        self.engine_token.setEchoMode(QLineEdit.EchoMode.Password)
        self.engine_token.setPlaceholderText("only for an engine started with --token")
        self.ports = {name: _port(getattr(settings, name)) for name, _ in PORT_FIELDS}
        self.host = QComboBox()
        self.host.addItems(list(HOST_CHOICES))
        self.host.setCurrentText(settings.host)
        self.midi_in = _editable_combo(midi_ports or [], settings.midi_in_port)
        self.output_dir = QLineEdit(settings.output_dir)
        self.output_dir.setMinimumWidth(380)
        self.output_dir.setToolTip(settings.output_dir)
        browse = QToolButton()
        browse.setIcon(icon("browse"))
        browse.setToolTip("Choose the folder")
        browse.clicked.connect(self._browse)
        output_row = QHBoxLayout()
        output_row.setContentsMargins(0, 0, 0, 0)
        output_row.addWidget(self.output_dir, 1)
        output_row.addWidget(browse)
        output = QWidget()
        output.setLayout(output_row)
        self.audio_device = QComboBox()
        self.audio_device.addItem("system default")
        self.audio_device.addItems(audio_devices)
        self.audio_device.setCurrentText(settings.audio_device or "system default")
        self.audio_device.setEnabled(bool(audio_devices))

        for combo in (self.host, self.midi_in, self.audio_device):
            combo.setMinimumWidth(240)
        self.midi_in.lineEdit().setPlaceholderText("none (type or pick an input)")
        engine_box, engine_form = _section("Engine")
        engine_form.addRow("URL", self.engine_url)
        engine_form.addRow("Token", self.engine_token)
        bridge_box, bridge_form = _section("DAW bridge (new ports apply at the next start)")
        bridge_form.addRow("DAW", self.host)
        for name, title in PORT_FIELDS:
            bridge_form.addRow(title, self.ports[name])
        bridge_form.addRow("MIDI in", self.midi_in)
        files_box, files_form = _section("Files and audio")
        files_form.addRow("Clip folder", output)
        files_form.addRow("Audio output", self.audio_device)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 14, 12)
        layout.setSpacing(10)
        for box in (engine_box, bridge_box, files_box):
            layout.addWidget(box)
        layout.addWidget(buttons)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.output_dir.text())
        if folder:
            self.output_dir.setText(folder)

    def result_settings(self) -> Settings:
        device = self.audio_device.currentText()
        return dataclasses.replace(
            self._original,
            engine_url=self.engine_url.text().strip() or self._original.engine_url,
            engine_token=self.engine_token.text().strip(),
            host=self.host.currentText(),
            midi_in_port=self.midi_in.currentText().strip(),
            output_dir=self.output_dir.text().strip() or self._original.output_dir,
            audio_device="" if device == "system default" else device,
            **{name: spin.value() for name, spin in self.ports.items()},
        )


def _port(value: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(1, 65535)
    spin.setValue(value)
    return spin


def _editable_combo(items: list[str], current: str) -> QComboBox:
    combo = QComboBox()
    combo.setEditable(True)
    combo.addItems(items)
    combo.setCurrentText(current)
    return combo


def _section(title: str) -> tuple[QGroupBox, QFormLayout]:
    box = QGroupBox(title)
    form = QFormLayout(box)
    form.setHorizontalSpacing(14)
    form.setVerticalSpacing(8)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
    return box, form
