"""Regenerate the documentation's figures by running the examples at full size.

    python docs/make_figures.py [name ...]      # default: every example with a figure in the docs

Each example writes its PNGs into a temporary folder; the ones the pages show are re-encoded as
palette PNGs (small files, < 200 KB each) into docs/figures/. The examples themselves are smoke-run at
reduced size by tests/test_examples.py; this script is run by hand when an example changes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
#: example script -> the figures of it that the pages include
SHOWN = {
    "processes_compare": ["processes_compare.png"],
    "reverse_family": ["reverse_family.png"],
    "iadb_2d": ["iadb_2d.png"],
    "trajectories": ["trajectories.png"],
    "score_optimal": ["score_optimal.png"],
    "score_optimal_cantor": ["score_optimal_cantor.png"],
    "score_optimal_digits": ["score_optimal_digits.png"],
    "likelihood_digits": ["likelihood_digits.png"],
    "blackout_digits": ["blackout_digits.png"],
    "inpainting_digits": ["inpainting_digits.png"],
}
MAX_BYTES = 200_000


def main(names: list[str]) -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    for name in names or SHOWN:
        with tempfile.TemporaryDirectory() as out:
            print(f"running examples/{name}.py", flush=True)
            subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), "--out", out], check=True)
            for figure in SHOWN[name]:
                target = FIGURES / figure
                with Image.open(Path(out) / figure) as image:
                    image.convert("RGB").quantize(colors=128).save(target, optimize=True)
                size = target.stat().st_size
                if size > MAX_BYTES:
                    raise SystemExit(f"{target} is {size} bytes (> {MAX_BYTES}); lower the example's dpi")
                print(f"  {target.relative_to(ROOT)}: {size // 1024} KB")


if __name__ == "__main__":
    main(sys.argv[1:])
