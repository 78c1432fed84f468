"""Choose the torch device once per run: ``auto`` prefers CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from engine.errors import DeviceError


def resolve_device(name: str = "auto") -> torch.device:
    """Map a config device name to a :class:`torch.device`.

    Raises:
        DeviceError: ``cuda`` or ``mps`` was asked for but is not available here.
    """
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise DeviceError("CUDA was requested but no CUDA GPU (or CUDA build of PyTorch) is available.",
                          field="device", hint="Use device 'auto' or 'cpu'.")
    if name == "mps" and not mps:
        raise DeviceError("Apple MPS was requested but is not available on this machine.", field="device",
                          hint="Use device 'auto' or 'cpu'.")
    return torch.device(name)


def available_devices() -> list[str]:
    """Device names usable on this machine, for the form's drop-down (``auto`` first)."""
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        out.append("mps")
    return out
