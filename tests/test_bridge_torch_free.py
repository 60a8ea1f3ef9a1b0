import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bridge_never_imports_torch():
    code = ("import sys\n"
            "import bridge.app, bridge.cli, bridge.commands, bridge.midi, bridge.clips, bridge.grid\n"
            "import bridge.reaper.adapter, bridge.ableton.adapter, bridge.ableton.AceCompanion\n"
            "import bridge.sketch, bridge.jam\n"
            "from ace_companion.cli import main\n"
            "assert main(['bridge', '--list-midi']) in (0, 2)\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'simulators'], 'the bridge imports a simulator'\n"
            "import simulators.osc, simulators.reaper, simulators.ableton, simulators.pipelines\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "print('TORCH' if bad else 'CLEAN')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip().endswith("CLEAN"), out.stdout + out.stderr


def test_bridge_help_runs():
    out = subprocess.run([sys.executable, "-m", "ace_companion", "bridge", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and "--engine-url" in out.stdout and "--source-file" in out.stdout
