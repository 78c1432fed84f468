"""MetaStudio's desktop window (PySide6 + pyqtgraph).

The window talks to the engine only through its public API: it edits an
:class:`~engine.ExperimentConfig`, drives a :class:`~engine.TrainingSession` in a worker thread and
reads runs back from its own :class:`~engine.RunStore` connection. Start it with
:func:`gui.app.main` (``metastudio gui`` or ``python -m gui``).
"""

from gui.qt_compat import apply_workarounds

apply_workarounds()
