"""CPU threads for the meta-training loop.

When no encoder runs inside the loop (cached embeddings, sinusoid regression), every tensor of a
meta-iteration is small — a few hundred rows — and PyTorch's intra-op thread pool costs more than it
gives: each parallel region waits for every pool thread, and on a busy machine (the window's own
thread, other programs) one descheduled thread stalls the step for a scheduler time slice. With
spinning OpenMP threads (libgomp's default) the ANIL step on a busy 2-core machine took 688 ms with two
threads and 12 ms with one; with ``OMP_WAIT_POLICY=PASSIVE`` (set by ``engine/_env.py``) 13 ms with two.
So such loops run on one intra-op thread, which also leaves the other cores to the window. Loops that
run encoder layers keep every thread.

``$METASTUDIO_LOOP_THREADS`` overrides the choice (a count; ``0`` = leave PyTorch's setting alone).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from engine.errors import ConfigError

ENV = "METASTUDIO_LOOP_THREADS"


def loop_thread_count(device: torch.device, encoder_in_loop: bool) -> int | None:
    """Intra-op threads for a training loop on ``device``; None = leave the current setting.

    Raises:
        ConfigError: ``$METASTUDIO_LOOP_THREADS`` is not a whole number.
    """
    env = os.environ.get(ENV, "").strip()
    if env:
        if not env.isdigit():
            raise ConfigError(f"{env!r} is not a thread count.", field=ENV,
                              hint="Use a whole number (0 = leave PyTorch's setting alone).")
        return int(env) or None
    if device.type != "cpu" or encoder_in_loop:
        return None
    return 1


@contextmanager
def loop_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads (None: unchanged); the previous count is restored."""
    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
