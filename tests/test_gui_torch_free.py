import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen"}


def test_gui_never_imports_torch():
    code = ("import sys, pkgutil, importlib, gui, gui.panels\n"
            "for pkg in (gui, gui.panels):\n"
            "    for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + '.'):\n"
            "        importlib.import_module(info.name)\n"
            "import engine.process\n"
            "from tests.gui_helpers import qt_app\n"
            "qt_app()\n"
            "from gui.main_window import MainWindow\n"
            "from gui.settings import Settings\n"
            "from engine.client import EngineClient\n"
            "settings_path = __import__('tempfile').mkdtemp() + '/gui.json'\n"
            "client = EngineClient('http://127.0.0.1:1', timeout=1)\n"
            "MainWindow(Settings(), client, settings_path=settings_path).close()\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "print('TORCH' if bad else 'CLEAN')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=ENV)
    assert out.stdout.strip().endswith("CLEAN"), out.stdout + out.stderr


def test_gui_help_runs_without_torch():
    code = ("import sys\n"
            "from ace_companion.cli import main\n"
            "try:\n"
            "    main(['gui', '--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'CLEAN')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=ENV)
    assert "--engine-url" in out.stdout and out.stdout.strip().endswith("CLEAN"), out.stdout + out.stderr
