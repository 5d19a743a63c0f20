"""Memory budgets: how many samples (images times their 1 + K views) one batch may hold on this machine, so that an
absurd --batch-size or --views is refused before any work instead of filling the memory.

A batch of N samples at H x W keeps about SAMPLE_COPIES copies of its N * H * W * 3 bytes alive at once (the
pipeline's buffers and output, the batches queued ahead of the runner and the one in it: about 3.6 measured on the
CPU path, rounded up). A batch may use at most half of the memory available to the process (MemAvailable, and the
cgroup's limit where one is set).
"""

from __future__ import annotations

import os

from fiqa_trt.errors import FiqaError

SAMPLE_COPIES = 8
SHARE = 0.5


def available_memory() -> int | None:
    """Bytes of memory this process may still use (Linux: MemAvailable, within a cgroup v2 limit); None unknown."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            return None
    return min(found)


def max_samples(input_size: tuple[int, int], available: int | None = None) -> int | None:
    """The most samples one batch may hold at `input_size` (None when the memory is unknown)."""
    available = available_memory() if available is None else available
    if available is None:
        return None
    h, w = input_size
    return max(1, int(available * SHARE) // (SAMPLE_COPIES * h * w * 3))


def check_batch(batch_size: int, views: int, input_size: tuple[int, int]) -> None:
    """FiqaError (one line, before anything runs) when `batch_size` images with `views` views each would not fit."""
    limit = max_samples(input_size)
    samples = batch_size * (1 + views)
    if limit is None or samples <= limit:
        return
    need = samples * SAMPLE_COPIES * input_size[0] * input_size[1] * 3
    raise FiqaError(f"--batch-size {batch_size} x (1 + {views} views) = {samples} images per batch need about "
                    f"{need / 2**30:.1f} GiB of memory at {input_size[1]}x{input_size[0]}, more than half of the "
                    f"{available_memory() / 2**30:.1f} GiB available: at most {limit} per batch (lower --batch-size or "
                    "--views)")
