"""Smoke-run the codelength benchmarks (``benchmarks/text.py``, ``benchmarks/codelength_digits.py``) in their
``--quick`` mode: each exits with status 0, prints its table with the anchors, and ``--save`` writes the table
under a header saying when (UTC), at which commit, and how loaded the machine was. Slow (each starts Python and
torch and trains a tiny model). The text benchmark's coding with context is checked directly: every byte of every
file is coded once, each block given exactly the bytes before it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, tmp_path: Path) -> tuple[str, str]:
    out = tmp_path / "table.txt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--save", str(out)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout, out.read_text()


@pytest.mark.slow
def test_text_benchmark_quick_mode_prints_the_table(tmp_path):
    stdout, saved = run("text.py", tmp_path)
    for row in ("zlib -9, each file", "zlib -9, concatenated", "bz2 -9, each file", "lzma -9e, each file",
                "lzma -9e, concatenated", "probdiff masked diffusion, -ELBO", "64-byte blocks given 192 before",
                "QUICK MODE", "goal: within 1.2x"):
        assert row in stdout and row in saved, row
    header = saved.splitlines()[0]
    assert header.startswith("# ") and "UTC, commit" in header and "load average" in header


@pytest.mark.slow
def test_digits_codelength_benchmark_quick_mode_prints_the_table(tmp_path):
    stdout, saved = run("codelength_digits.py", tmp_path)
    for row in ("probdiff masking, Transformer", "probdiff uniform, Transformer", "probdiff Blackout, MLP",
                "per-pixel categorical", "lzma -9e of the test bytes", "quoted: probdiff Blackout", "QUICK MODE"):
        assert row in stdout and row in saved, row
    assert "UTC, commit" in saved.splitlines()[0]


def test_text_benchmark_windows_code_every_byte_once_given_the_bytes_before():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import text
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    length = text.LENGTH
    files = [bytes((7 * i + i // 300) % 251 for i in range(n)) for n in (length, length + 1, 3 * length + 17, 1000)]
    for block in (1, 64, 100, length - 1):
        wins, observed = text.windows(files, block)
        assert wins.shape[1] == length and observed.shape == wins.shape
        row = 0
        for data in files:
            coded, end = [], length
            first = wins[row]
            assert not bool(observed[row].any()) and bytes(first.tolist()) == data[:length]
            coded.append(data[:length])
            row += 1
            while end < len(data):
                free = int((~observed[row]).sum())
                assert 1 <= free <= block and bool((~observed[row][-free:]).all())   # the last `free` positions
                assert bytes(wins[row].tolist()) == data[end + free - length:end + free]  # the bytes just before
                coded.append(bytes(wins[row][-free:].tolist()))
                end += free
                row += 1
            assert b"".join(coded) == data
        assert row == wins.shape[0]
