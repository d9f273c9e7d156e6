"""Peak memory and wall time of a job, recorded in its outputs' metadata.

Jobs whose outputs Snakemake caches (``cache:``) may not have a ``benchmark:`` file, so each
influence job records ``resources: {peak_rss_mb, peak_gpu_mb, seconds}`` in its store's
attributes instead, measured by a :class:`ResourceMonitor` started when the job starts.

Peak RSS is the kernel's high-water mark of the process's resident set (``VmHWM``), reset at the
monitor's start where Linux allows it (``/proc/self/clear_refs``), so the peak is the job's and
not that of whatever the process did before (e.g. a test session). Elsewhere it falls back to
``getrusage``'s lifetime peak. Peak GPU memory is PyTorch's ``max_memory_allocated`` since the
monitor started (tensors only, not the caching allocator's reserve), ``None`` without CUDA.
"""

from __future__ import annotations

import ctypes
import resource
import sys
import time
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
#: Allocations of this many bytes or more get a memory mapping of their own (glibc's
#: ``M_MMAP_THRESHOLD``, parameter -3 of ``mallopt``), returned to the system when freed.
MMAP_THRESHOLD_BYTES = 2**20
_M_MMAP_THRESHOLD = -3


def return_freed_blocks_to_system() -> bool:
    """Make glibc map every allocation of :data:`MMAP_THRESHOLD_BYTES` or more on its own, so a
    freed tensor leaves the resident set; ``False`` where the C library has no ``mallopt``.

    By default glibc raises that threshold (up to 32 MiB) each time a mapped block is freed;
    from then on the slices' activations, products and even float64 sums come from the heap,
    whose freed blocks stay resident. At SmolLM2's shape that held 0.5 GB of the EK-FAC
    covariance pass's peak (``docs/scaling.md#memory-of-each-pass``). Every job calls it at
    start (``tikmix.workflow.script_logging``).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1


def current_rss_mb() -> float | None:
    """Resident set size of this process now (MiB), ``None`` where ``/proc`` is unavailable."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """High-water mark of this process's resident set (MiB) since the last reset."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 2**10  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS; ``False`` if not supported."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _status_mb(key: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 2**10  # kB
    except OSError:
        return None
    return None


class ResourceMonitor:
    """Wall time, peak RSS and peak GPU memory from construction to each :meth:`usage` call.

    ``device`` selects the CUDA device whose allocator peak is reset and read; for a CPU device
    (or without CUDA) ``peak_gpu_mb`` is ``None``.
    """

    def __init__(self, device: torch.device | str | None = None):
        device = torch.device(device) if device is not None else None
        self.cuda = device is not None and device.type == "cuda" and torch.cuda.is_available()
        self.device = device
        self.rss_reset = reset_peak_rss()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.start = time.perf_counter()

    def usage(self) -> dict[str, float | None]:
        """``{peak_rss_mb, peak_gpu_mb, seconds}`` so far (JSON-ready; rounded to 0.1)."""
        peak_gpu = None
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak_gpu = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        return {
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "peak_gpu_mb": peak_gpu,
            "seconds": round(time.perf_counter() - self.start, 3),
        }
