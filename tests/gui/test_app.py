"""Starting the application: ``gui.app.main`` and ``python -m gui``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from engine import ExperimentConfig, RunStore

ROOT = Path(__file__).resolve().parents[2]


def test_main_marks_stale_runs_and_shows_the_window(db_path, qapp):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store = RunStore(db_path)
    rid = store.create_run(ExperimentConfig().to_dict(), "left running")
    store.update_run(rid, status="running", pid=gone.pid)
    store.close()

    seen = {}

    def look():
        from gui.main_window import MainWindow

        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if not windows or not hasattr(windows[0], "startup_s"):
            QTimer.singleShot(20, look)
            return
        w = windows[0]
        seen.update(status=w.runs.status_of(rid), title=w.windowTitle(), startup_s=w.startup_s)
        w.close()

    QTimer.singleShot(0, look)
    from gui.app import main

    assert main([sys.argv[0]], db_path=db_path) == 0
    assert seen["status"] == "interrupted"
    assert str(db_path) in seen["title"]
    assert seen["startup_s"] > 0
    store = RunStore(db_path)
    try:
        assert store.get_run(rid)["status"] == "interrupted"
    finally:
        store.close()


def test_python_m_gui_parses_db_option():
    out = subprocess.run([sys.executable, "-m", "gui", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--db PATH" in out.stdout


def test_window_modules_load_without_torch():
    """The window appears before torch is imported (start-up time); torch loads in a job thread."""
    code = ("import sys, gui.app, gui.main_window, gui.worker; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_device_probe_marks_the_devices_of_this_machine(make_window, qtbot):
    from engine.models.device import available_devices

    w = make_window()
    combo = w.form.editor("device")
    expected = available_devices()
    texts = {combo.itemData(i): combo.itemText(i) for i in range(combo.count())}
    qtbot.waitUntil(lambda: all((combo.itemText(i) == combo.itemData(i)) == (combo.itemData(i) in expected)
                                for i in range(combo.count())), timeout=60_000)
    assert texts["cpu"] == "cpu" and combo.itemText(combo.findData("auto")) == "auto"
    for dev in ("cuda", "mps"):
        if dev not in expected:
            assert combo.itemText(combo.findData(dev)) == f"{dev} (not available here)"


def _no_display_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine without a display: no DISPLAY, WAYLAND_DISPLAY or QT_QPA_PLATFORM."""
    keep = ("PATH", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(HOME=str(tmp_path), METASTUDIO_DB=str(tmp_path / "runs.db"), PYTHONPATH=str(ROOT))
    return env


def test_without_a_display_the_launchers_explain_and_exit_2(tmp_path):
    from gui.app import NO_DISPLAY_EXIT, missing_display

    assert NO_DISPLAY_EXIT == 2
    assert missing_display({}, "linux") and "QT_QPA_PLATFORM=offscreen" in missing_display({}, "linux")
    assert missing_display({"DISPLAY": ":0"}, "linux") is None
    assert missing_display({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert missing_display({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert missing_display({}, "darwin") is None and missing_display({}, "win32") is None

    if not sys.platform.startswith("linux"):
        return  # macOS and Windows always have a display server: the launchers would open the window
    script = Path(sys.executable).with_name("metastudio")
    assert script.exists(), "the console script of `pip install -e .`"
    for cmd in ([sys.executable, "-m", "gui"], [str(script)]):
        out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env=_no_display_env(tmp_path))
        assert out.returncode == 2, (cmd, out.returncode, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("metastudio: no display found"), out.stderr
        assert "metastudio train" in lines[0] and "QT_QPA_PLATFORM=offscreen" in lines[0]
        assert "xcb" not in out.stderr and not (tmp_path / "runs.db").exists()
