"""The progress of ``parrbm run``: one bar over the grid's measurements, with an ETA, on
standard error when it is a terminal; every message written through it, so that lines
and bar do not break each other. Without a terminal, the messages alone, a line each."""

from __future__ import annotations

import sys


class RunProgress:
    """A ``progress`` for :func:`parrbm.harness.experiment.run_config`: callable with a
    message; ``plan(total)`` and ``advance(n)`` drive the bar."""

    def __init__(self, *, bar: bool | None = None, file=None):
        self.file = file or sys.stderr
        self.want_bar = self.file.isatty() if bar is None else bar
        self.bar = None

    def __call__(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.file)
        else:
            print(message, file=self.file, flush=True)

    def plan(self, total: int) -> None:
        """The grid's bar: ``total`` measurements (each repeat of each point)."""
        self.stage("grid", total, "runs")

    def stage(self, desc: str, total: int | None, unit: str) -> None:
        """A bar of its own for a stage (``total`` None: not known, counted without an ETA)."""
        if not self.want_bar or (total is not None and total <= 0):
            return
        from tqdm.auto import tqdm

        self.close()
        fmt = (
            "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} " + unit + " [{elapsed}<{remaining}]"
            if total
            else "{desc}: {n_fmt} " + unit + " [{elapsed}]"
        )
        self.bar = tqdm(total=total, desc=desc, file=self.file, dynamic_ncols=True, bar_format=fmt)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
