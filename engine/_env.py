"""Process settings the engine needs before PyTorch loads (imported first by ``engine/__init__``).

``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP pool threads sleep instead of spinning. libgomp reads the
variable once, when torch is imported, so it is set here, before any engine module imports torch; an
explicit setting in the environment wins. On a desktop the cores are shared with the window and other
programs, and spinning pool threads made small-tensor meta-training steps 10-50x slower on a busy
2-core machine (ANIL step: 688 ms spinning vs 13 ms passive, same run); see the README's Performance
section. ``$METASTUDIO_LOOP_THREADS`` (engine/training/threads.py) sets the loop's thread count.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
