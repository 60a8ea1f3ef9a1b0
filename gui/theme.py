"""The dark theme (Fusion style, a dark palette and `dark.qss`) and the window's icons.

Icons are Qt's standard icons, which the Fusion style draws itself: they look the same on
every platform and need no emoji or symbol font.
"""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtGui import QColor, QIcon, QPalette
from PyQt6.QtWidgets import QApplication, QStyle

STYLE_SHEET = Path(__file__).with_name("dark.qss")

# One place for the colours the painters use (dark.qss uses the same values).
COLOURS = {
    "window": "#111418",
    "panel": "#171b21",
    "field": "#0c0f13",
    "border": "#2b3139",
    "text": "#e3e7ec",
    "muted": "#8a939e",
    "accent": "#3d8bfd",
    "go": "#2f9e57",
    "wave_peak": "#2c6e8f",
    "wave_rms": "#5cc8e6",
    "wave_peak_selected": "#3a78c2",
    "wave_rms_selected": "#9fd0ff",
    "region": "#f0a040",
    "playhead": "#ffffff",
    "warn": "#f0a040",
    "error": "#ff7b72",
    "ok": "#3fb950",
    "off": "#59626d",
}

ICONS = {
    "play": QStyle.StandardPixmap.SP_MediaPlay,
    "stop": QStyle.StandardPixmap.SP_MediaStop,
    "seed": QStyle.StandardPixmap.SP_BrowserReload,
    "restart": QStyle.StandardPixmap.SP_BrowserReload,
    "browse": QStyle.StandardPixmap.SP_DirOpenIcon,
    "reveal": QStyle.StandardPixmap.SP_DirIcon,
    "recall": QStyle.StandardPixmap.SP_ArrowBack,
    "insert": QStyle.StandardPixmap.SP_ArrowForward,
    "cancel": QStyle.StandardPixmap.SP_DialogCancelButton,
    "clear": QStyle.StandardPixmap.SP_DialogResetButton,
    "open": QStyle.StandardPixmap.SP_DialogOpenButton,
    "warning": QStyle.StandardPixmap.SP_MessageBoxWarning,
    "settings": QStyle.StandardPixmap.SP_FileDialogDetailedView,
    "quit": QStyle.StandardPixmap.SP_DialogCloseButton,
    "close": QStyle.StandardPixmap.SP_TitleBarCloseButton,
}


def icon(name: str) -> QIcon:
    """A standard icon by our name (see ICONS); needs a QApplication."""
    return QApplication.style().standardIcon(ICONS[name])


def dark_palette() -> QPalette:
    palette = QPalette()
    colours = {
        QPalette.ColorRole.Window: COLOURS["window"],
        QPalette.ColorRole.WindowText: COLOURS["text"],
        QPalette.ColorRole.Base: COLOURS["field"],
        QPalette.ColorRole.AlternateBase: COLOURS["panel"],
        QPalette.ColorRole.ToolTipBase: COLOURS["panel"],
        QPalette.ColorRole.ToolTipText: COLOURS["text"],
        QPalette.ColorRole.Text: COLOURS["text"],
        QPalette.ColorRole.Button: "#232931",
        QPalette.ColorRole.ButtonText: COLOURS["text"],
        QPalette.ColorRole.BrightText: COLOURS["error"],
        QPalette.ColorRole.Highlight: "#2563c9",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: "#6cb6ff",
        QPalette.ColorRole.PlaceholderText: "#5d6671",
        QPalette.ColorRole.Mid: COLOURS["border"],
        QPalette.ColorRole.Dark: "#0a0c0f",
    }
    for role, colour in colours.items():
        palette.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#4a525c"))
    return palette


def apply_dark_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    app.setPalette(dark_palette())
    try:
        app.setStyleSheet(STYLE_SHEET.read_text(encoding="utf-8"))
    except OSError:
        pass  # the palette alone is still dark
