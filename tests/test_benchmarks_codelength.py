"""Smoke-run the codelength benchmarks (``benchmarks/text.py``, ``benchmarks/codelength_digits.py``) in their
``--quick`` mode: each exits with status 0, prints its table with the anchors, and ``--save`` writes the table
under a header saying when (UTC), at which commit, and how loaded the machine was. Slow (each starts Python and
torch and trains a tiny model)."""

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
                "lzma -9e, concatenated", "probdiff masked diffusion, -ELBO", "QUICK MODE", "goal: within 1.2x"):
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
