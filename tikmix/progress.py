"""Progress lines for long loops: tokens/s and ETA in the job's log.

Every job that runs a model or the curvature factors logs through :class:`Progress` (or the
training loop's own line, on the same clock and interval): a line at most every
:data:`INTERVAL_SECONDS` of wall time, whatever the batches cost, and one at the end. The clock
is the module's :func:`clock`, which tests replace to slow a job down without waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

#: Seconds between two progress lines of a job (the promise: at least one every 30 s).
INTERVAL_SECONDS = 10.0


def clock() -> float:
    """Seconds on a monotonic clock (what every progress line measures time with)."""
    return time.perf_counter()


class Progress:
    """Logs ``done/total`` units with throughput and ETA, a line once ``interval`` seconds have
    passed since the last one (checked at each update) and at the end."""

    def __init__(
        self,
        total: int,
        what: str,
        logger: logging.Logger,
        unit: str = "tokens",
        interval: float = INTERVAL_SECONDS,
    ):
        self.total, self.what, self.logger, self.unit = total, what, logger, unit
        self.interval = interval
        self.done = 0
        self.start = self._last = clock()

    def update(self, n: int, **fields: float) -> None:
        self.done += n
        now = clock()
        if now - self._last < self.interval and self.done < self.total:
            return
        self._last = now
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        extra = " ".join(f"{k}={v:.4g}" for k, v in fields.items())
        self.logger.info(
            "%s: %d/%d %s (%.1f%%), %.0f %s/s, ETA %.0fs %s",
            self.what,
            self.done,
            self.total,
            self.unit,
            100 * self.done / max(self.total, 1),
            rate,
            self.unit,
            eta,
            extra,
        )

    def track(self, batches: Iterable) -> Iterator:
        """Yield ``batches`` ([B, L+1] arrays or (ids, mask) pairs), counting their tokens."""
        for batch in batches:
            yield batch
            ids = batch[0] if isinstance(batch, tuple) else batch
            self.update(int(ids.shape[0]) * (int(ids.shape[1]) - 1))

    @property
    def rate(self) -> float:
        elapsed = clock() - self.start
        return self.done / elapsed if elapsed > 0 else float("nan")


def with_progress(batches: Iterable, total_tokens: int, what: str, logger: logging.Logger):
    """Yield ``batches`` ([B, L+1] arrays or (ids, mask) pairs) while logging tokens/s and ETA."""
    return Progress(total_tokens, what, logger).track(batches)
