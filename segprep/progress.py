"""A progress line on stderr for long runs: count of total, rate, ETA.

On a terminal the line is rewritten in place; otherwise (a log file, CI) a new line is printed every `every`
seconds (SEGPREP_PROGRESS_SECONDS, default 5), so logs stay short. Nothing is printed for runs that end before the
first update is due.
"""

from __future__ import annotations

import os
import sys
import time


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    def __init__(self, label: str, total: int | None, unit: str, every: float | None = None, stream=None):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if every is None:
            every = float(os.environ.get("SEGPREP_PROGRESS_SECONDS", "5"))
        self.every = min(0.5, every) if self.tty else every
        self.started = time.monotonic()
        self.last = self.started
        self.done = 0
        self.shown = False

    def line(self, extra: str = "") -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        of = f"/{self.total:,}" if self.total else ""
        text = f"{self.label}: {self.done:,}{of} {self.unit}, {rate:.1f}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        return text + (f", {extra}" if extra else "")

    def update(self, n: int = 1, extra: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._print(self.line(extra))

    def _print(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        """Ends an in-place line with a newline (nothing else: the caller prints its own summary)."""
        if self.shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()
