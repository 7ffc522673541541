"""A one-line progress report on stderr: which row runs now, how far along, against the budget."""

import sys
import time


class Progress:
    """On a terminal the line is rewritten in place; in a log (the GPU machine's captured
    output) each finished row gets a line of its own."""

    def __init__(self, total: int, budget_s: float | None, stream=None):
        # sys.stderr when called, not when defined: the stream a caller (or pytest) has put there
        self.total, self.budget_s, self.stream = total, budget_s, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self.n = 0
        self.text = ""

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def _prefix(self) -> str:
        budget = f"/{self.budget_s:.0f}" if self.budget_s is not None else ""
        return f"[{self.n:>4}/{self.total} {100 * self.n / max(self.total, 1):3.0f}% {self.elapsed():4.0f}{budget}s]"

    def start(self, text: str) -> None:
        self.text = text
        if self.tty:
            self.stream.write(f"\r\033[K{self._prefix()} {text} ...")
            self.stream.flush()

    def done(self, outcome: str) -> None:
        self.n += 1
        line = f"{self._prefix()} {self.text}: {outcome}"
        self.stream.write(f"\r\033[K{line}" if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
