"""GPU settings shared by the pytorch and tensorflow trainers (no framework imported here).

flower-init passes the SuperNode's FL_CUDA_VISIBLE_DEVICES as CUDA_VISIBLE_DEVICES and
FL_GPU_MEMORY_FRACTION as is. CUDA reads CUDA_VISIBLE_DEVICES itself, when the framework first
initialises it, so it must be right before that.
"""

import os


def memory_fraction() -> float:
    """FL_GPU_MEMORY_FRACTION in (0, 1]; unset or empty means the whole device (1.0)."""
    raw = os.environ.get("FL_GPU_MEMORY_FRACTION", "").strip() or "1.0"
    try:
        frac = float(raw)
    except ValueError:
        raise ValueError(f"FL_GPU_MEMORY_FRACTION={raw!r} is not a number") from None
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"FL_GPU_MEMORY_FRACTION={raw!r} must be in (0, 1]")
    return frac


def normalise_visible_devices() -> str:
    """`all` (the appliance's default word) is not a value CUDA understands: it would hide
    every GPU. Drop it so CUDA sees all devices; return what CUDA will see, for the log."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None and value.strip().lower() == "all":
        del os.environ["CUDA_VISIBLE_DEVICES"]
        return "all"
    return "unset (all)" if value is None else value
