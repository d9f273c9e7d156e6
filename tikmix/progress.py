"""Progress lines for long loops: tokens/s and ETA in the job's log."""

from __future__ import annotations

import logging
import time


class Progress:
    """Logs ``done/total`` units with throughput and ETA at most every ``interval`` seconds."""

    def __init__(
        self, total: int, what: str, logger: logging.Logger, unit: str = "tokens", interval=10.0
    ):
        self.total, self.what, self.logger, self.unit = total, what, logger, unit
        self.interval = interval
        self.done = 0
        self.start = self._last = time.perf_counter()

    def update(self, n: int, **fields: float) -> None:
        self.done += n
        now = time.perf_counter()
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

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else float("nan")


def with_progress(batches, total_tokens: int, what: str, logger: logging.Logger):
    """Yield ``batches`` ([B, L+1] arrays or (ids, mask) pairs) while logging tokens/s and ETA."""
    progress = Progress(total_tokens, what, logger)
    for batch in batches:
        yield batch
        ids = batch[0] if isinstance(batch, tuple) else batch
        progress.update(int(ids.shape[0]) * (int(ids.shape[1]) - 1))
