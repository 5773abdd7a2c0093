"""Shared by the codelength benchmarks: print a line and keep it, then save the lines under a header saying when
(UTC), at which commit, and how loaded the shared machine was."""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

__all__ = ["Report"]


class Report:
    """``report(line)`` prints and keeps a line; :meth:`save` writes the header and the lines to a file."""

    def __init__(self, command: str):
        self.command = command
        self.lines: list[str] = []
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.load_start = os.getloadavg()

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def header(self) -> list[str]:
        root = Path(__file__).resolve().parents[1]
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                    text=True, check=True).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                   capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit, dirty = "unknown", ""
        end = datetime.datetime.now(datetime.timezone.utc)
        la, lb = self.load_start, os.getloadavg()
        return [f"# {self.started:%Y-%m-%d %H:%M}-{end:%H:%M} UTC, commit {commit}"
                f"{' (with uncommitted changes)' if dirty else ''}, {os.cpu_count()} CPU cores shared with other "
                f"jobs: load average (1/5/15 min) {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f} at the start, "
                f"{lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f} at the end",
                f"$ {self.command}"]

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text("\n".join(self.header() + self.lines) + "\n")
