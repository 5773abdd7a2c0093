"""The likelihood lines of the command line: "bits/dim ± SE(trace) ± 95% CI(data)" (issue 15, item 1).

Expected values: the CI from the per-image values the command returns (1.96 s / sqrt(n), computed here), the
SE from the per-image standard errors of probdiff.log_likelihood on the same dequantised images and probes
(recomputed here), and the printed numbers parsed back from the line.
"""

import math
import re

import pytest
import torch

import probdiff as pd
from probdiff import cli
from probdiff.cli.commands import Scores, run_methods

TINY = ["--hidden", "16", "--depth", "1", "--batch-size", "64", "--steps", "4", "--warmup", "2", "--quiet"]
LINE = re.compile(r"(\w+): ([0-9.]+) bits/dim ± ([0-9.]+|n/a) \(SE, trace\) ± ([0-9.]+|n/a) "
                  r"\(95% CI, data; n = (\d+)\) \((.+?)\)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.pt"
    assert cli.main(["train", "--checkpoint", str(path), *TINY]) == 0
    return path


def _lines(out):
    return {m.group(1): m for m in LINE.finditer(out)}


def test_exact_trace_line(checkpoint, capsys):
    assert cli.main(["likelihood", "--checkpoint", str(checkpoint), "--limit", "4", "--rtol", "1e-3",
                     "--quiet"]) == 0
    line = _lines(capsys.readouterr().out)["exact"]
    assert line.group(3) == "0.0000" and line.group(5) == "4"
    assert "dequantised" in line.group(6)


def test_hutchinson_line_numbers(checkpoint):
    """--probes 3: the printed SE is sqrt(sum se_i^2) / (n D ln 2) of the images' own SEs, the CI 1.96 sd/sqrt n."""
    from probdiff.cli.app import dispatch

    summary = dispatch(["likelihood", "--checkpoint", str(checkpoint), "--limit", "5", "--rtol", "1e-3", "--probes",
                        "3", "--quiet"])
    line = _lines(summary)["exact"]
    bits = summary.values["exact"]
    assert float(line.group(2)) == pytest.approx(float(bits.mean()), abs=1e-4)
    assert float(line.group(4)) == pytest.approx(1.96 * float(bits.std()) / math.sqrt(5), abs=1e-4)
    # the same images, probes and model, scored directly
    setup, _ = cli.runs.from_checkpoint(str(checkpoint), torch.device("cpu"))
    x = setup.transform(setup.split.test.counts[:5], torch.Generator().manual_seed(0))
    _, stats = pd.log_likelihood(setup.process, setup.model, x, trace=pd.Hutchinson(3), rtol=1e-3, atol=1e-3,
                                 generator=torch.Generator().manual_seed(3), return_stats=True)
    se = float(stats.se.pow(2).sum().sqrt()) / (5 * 64 * math.log(2))
    assert se > 0 and float(line.group(3)) == pytest.approx(se, abs=1e-4)
    assert summary.summaries["exact"].se_trace == pytest.approx(se, rel=1e-6)


def test_elbo_line_says_the_se_does_not_apply(checkpoint, capsys):
    assert cli.main(["likelihood", "--checkpoint", str(checkpoint), "--limit", "3", "--method", "elbo",
                     "--elbo-samples", "2", "--quiet"]) == 0
    line = _lines(capsys.readouterr().out)["elbo"]
    assert line.group(3) == "n/a" and "inside the CI" in line.group(6)


def test_run_methods_format_and_values():
    """run_methods prints one line per method from Scores; one image has no CI."""
    log_p = torch.tensor([-10.0, -12.0, -11.0], dtype=torch.float64)
    se = torch.tensor([0.3, 0.4, 0.0], dtype=torch.float64)
    table = {"a": (lambda: Scores(log_p, se, (4,), {"levels": 2, "data_range": (0.0, 1.0)}), "note a"),
             "b": (lambda: Scores(log_p[:1], None, (4,), {}), "note b")}
    summary = run_methods(table, ["a", "b"], lambda f: f(), "head")
    lines = _lines(summary)
    bits = -log_p / (4 * math.log(2)) + 1.0              # log2 K - log2(hi - lo) = 1
    assert float(lines["a"].group(2)) == pytest.approx(float(bits.mean()), abs=1e-4)
    assert float(lines["a"].group(3)) == pytest.approx(0.5 / (3 * 4 * math.log(2)), abs=1e-4)
    assert float(lines["a"].group(4)) == pytest.approx(1.96 * float(bits.std()) / math.sqrt(3), abs=1e-4)
    assert lines["b"].group(3) == "0.0000" and lines["b"].group(4) == "n/a" and lines["b"].group(6) == "note b"
    assert torch.allclose(summary.values["a"], bits)
    assert summary.startswith("head, ")


def test_bits_per_dim_summary_prints_unknown_se_as_na():
    out = str(pd.bits_per_dim_summary(torch.tensor([-5.0, -6.0]), torch.tensor([float("nan"), 0.1]), (2,)))
    assert "± n/a (SE, trace)" in out and "(95% CI, data; n = 2)" in out
