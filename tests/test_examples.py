"""Smoke-run every script in examples/ at reduced size (``--quick``) and check the figures it writes.

Each example must run on a CPU with the bundled data, accept ``--out DIR`` and ``--quick``, exit with
status 0 and write at least ``<script name>.png`` into ``DIR``; every PNG it writes must be a valid,
non-empty image. Slow (each script starts Python and torch): run by ``.ci/run`` with ``-m slow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))  # _common.py: shared scaffolding
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_examples_exist():
    assert len(EXAMPLES) >= 7, [p.name for p in EXAMPLES]


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_writes_valid_pngs(script: Path, tmp_path: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--quick"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert (tmp_path / f"{script.stem}.png").is_file(), f"{script.name} did not write {script.stem}.png"
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_SIGNATURE, f"{png.name} is not a PNG file"
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            width, height = image.size
            assert width >= 100 and height >= 100, f"{png.name} is only {width}x{height}"
            low, high = image.convert("L").getextrema()
            assert low < high, f"{png.name} is a blank image"
