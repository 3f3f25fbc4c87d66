"""Every benchmark script runs end to end at --quick sizes and prints its figures.

No timing assertions: these only check that the scripts work (so they do not
rot) and print what their READMEs promise. The twinify comparison only checks
that it exits 0 with a clear message when twinify is not installed.
"""
import importlib.util
import pathlib
import re

import numpy as np
import pytest

_BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
  spec = importlib.util.spec_from_file_location(name, _BENCH / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _header_ok(out):
  assert re.search(r"^# date .* commit \S+ jax \S+ device \S+", out, re.M), out[:500]
  assert "loadavg" in out


@pytest.mark.slow
def test_bench_end_to_end_quick(capsys):
  assert _load("bench_end_to_end").main(["--quick"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  assert "--visualize none: T = 100 DP steps" in out
  for phase in ("load and encode", "noise calibration", "compile", "training", "sampling",
                "writing", "peak resident memory", "outside it"):
    assert phase in out, phase


def test_parse_phases():
  bench = _load("bench_end_to_end")
  total, phases = bench.parse_phases(
      "x\njtwin: done in 12.5 s (load and encode 0.20s | noise calibration 0.30s | compile "
      "2.00s | training 9.00s | sampling 1.00s | writing 0.10s)\n")
  assert total == 12.5
  assert phases == {"load and encode": 0.2, "noise calibration": 0.3, "compile": 2.0,
                    "training": 9.0, "sampling": 1.0, "writing": 0.1}


@pytest.mark.slow
def test_bench_dp_overhead_quick(capsys):
  assert _load("bench_dp_overhead").main(["--quick"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  rows = [l.split() for l in out.splitlines() if re.match(r"^\s+3\s+64\s", l)]
  assert len(rows) == 1 and rows[0][-5].endswith("x")     # dp/np, glob/np, vmap/np ratios
  assert re.search(r"^\s+3\s+\S+ \S+\s+\S+ \S+\s+\S+x", out, re.M)  # the fit row


@pytest.mark.slow
def test_bench_scaling_quick(capsys):
  assert _load("bench_scaling").main(["--quick"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  assert "failed" not in out
  assert re.search(r"^\s+2000\s+3\s+20\s", out, re.M)               # one training row
  assert re.search(r"^\s+1000\s+.*GiB", out, re.M)                   # one sampling row


def test_bench_vs_twinify_without_twinify(capsys):
  assert _load("bench_vs_twinify").main(["--twinify-python", "/nonexistent"]) == 0
  out = capsys.readouterr().out
  assert "twinify not available" in out


def test_twinify_phase_split():
  bench = _load("bench_vs_twinify")
  marks = {"imported": [2.0], "read_csv:start": [2.1], "read_csv:end": [2.3],
           "model_setup:start": [2.3], "model_setup:end": [10.0],
           "accountant:start": [10.0], "accountant:end": [20.0],
           "svi_init:start": [21.0], "svi_init:end": [30.0], "epoch_done": [100.0, 160.0],
           "fit:start": [10.0], "fit:end": [161.0], "store:start": [161.0],
           "store:end": [162.0], "sampling:start": [162.0], "sampling:end": [200.0],
           "to_csv:start": [200.0], "to_csv:end": [201.0]}
  phases, epochs = bench.twinify_phases(marks, 202.0)
  assert epochs == [100.0, 160.0]
  assert phases["noise calibration"] == pytest.approx(10.0)
  assert phases["compile + first epoch"] == pytest.approx(70.0)
  assert phases["later epochs"] == pytest.approx(60.0)
  assert phases["sampling"] == pytest.approx(38.0)


def test_bench_vs_twinify_report(monkeypatch, capsys):
  """The comparison's report, with both tools' runs faked (no twinify needed)."""
  bench = _load("bench_vs_twinify")
  jt_phases = lambda tr: {"python start and import": 1.0, "load and encode": 0.1,
                          "noise calibration": 1.0, "compile": 2.0, "training": tr,
                          "sampling": 2.0, "writing": 0.1}
  monkeypatch.setattr(bench, "twinify_available", lambda python: (True, "fake twinify"))
  monkeypatch.setattr(bench.os.path, "exists", lambda path: True)
  monkeypatch.setattr(bench, "run_jtwin", lambda data, e, tmp, timeout: {
      "cmd": ["python", "-m", "jtwin"], "wall": 8.0 + 0.2 * e, "rss": 2**29, "cpu": 9.0,
      "rc": 0, "phases": jt_phases(1.0 + 0.2 * (e - 1))})
  monkeypatch.setattr(bench, "run_twinify", lambda python, data, e, tmp, timeout: {
      "cmd": ["py", "shim", "out.json", "vi"], "wall": 80.0 + 70.0 * e, "rss": 9 * 2**30,
      "cpu": 200.0, "rc": 0, "epoch_s": 70.0 if e >= 2 else float("nan"),
      "phases": {"sampling": 40.0}})
  assert bench.main(["--epochs", "1,2", "--jtwin-full", "200"]) == 0
  out = capsys.readouterr().out
  assert re.search(r"time per epoch\s+70\.00s\s+0\.20s\s+350\.0x", out), out
  assert "EXTRAPOLATED" in out and "## 200 epochs" in out


@pytest.mark.slow
def test_quality_napsumq_quick(capsys):
  assert _load("quality_napsumq").main(["--quick"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  assert re.search(r"^\| 1 \| 0 \| .* \| \d+\.\d s \| \d+\.\d\d GiB \|$", out, re.M), out


@pytest.mark.slow
def test_coverage_bias_napsumq_quick(capsys):
  assert _load("coverage_bias_napsumq").main(["--quick"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  for label in ("real rows:", "twin:", "real covariates, oracle income:",
                "twin covariates, oracle income:"):
    line = next(l for l in out.splitlines() if l.startswith(label))
    assert len(line[len(label):].split(" / ")) == 5, line
  assert re.search(r"^real: (\+|-)\d\.\d{3}( (\+|-)\d\.\d{3}){5}$", out, re.M)
  assert re.search(r"^twin:( +\d+\.\d| +nan){14}$", out, re.M)


@pytest.mark.slow
def test_coverage_napsumq_quick(capsys):
  assert _load("coverage_napsumq").main(["--quick", "--options", "init_peak=0.0"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  assert "'init_peak': 0.0" in out, out
  assert re.search(r"^\| all \| \| \| \d\.\d\d \| \|$", out, re.M), out
  assert re.search(r"^\| age/10 \| 0\.4560 \| -?\d+\.\d{4} \| \d\.\d\d \| \d+\.\d{4} \|$", out, re.M), out


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ("non_private=True", {"non_private": True}),
    ("target='income', init_peak=0.0, queries=[['a', 'b']]",
     {"target": "income", "init_peak": 0.0, "queries": [["a", "b"]]}),
])
def test_fit_options_parses_literal_keywords(text, expected):
  assert _load("_bench_common").fit_options(text) == expected


@pytest.mark.parametrize("text", ["x=len('a')", "1, 2", "**{'a': 1}"])
def test_fit_options_rejects_what_is_not_name_equals_literal(text):
  with pytest.raises(ValueError):
    _load("_bench_common").fit_options(text)


@pytest.mark.slow
def test_bench_napsumq_scaling_quick(capsys):
  assert _load("bench_napsumq_scaling").main(["--quick"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  assert len(re.findall(r"^\| 1e\+03 \| \d+ \| \d+ \|", out, re.M)) == 2, out


@pytest.mark.slow
def test_warmstart_napsumq_quick(capsys):
  assert _load("warmstart_napsumq").main(["--quick", "--shares", "0.5"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  total = float(re.search(r"certified total (\d\.\d+)", out).group(1))
  assert total <= 1.0


def test_baselines_smartnoise_without_its_venv(capsys, tmp_path):
  assert _load("baselines_smartnoise").main(["--python", str(tmp_path / "none")]) == 0
  assert "smartnoise-synth not available" in capsys.readouterr().out


@pytest.mark.slow
def test_unseen_napsumq_quick(capsys):
  assert _load("unseen_napsumq").main(["--quick"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  assert "| jtwin napsumq, epsilon 1" in out and "| jtwin fit, epsilon 1" in out


@pytest.mark.slow
def test_ablate_napsumq_quick(capsys):
  assert _load("ablate_napsumq").main(["--quick", "--data", "loans",
                                       "--options", "init_peak=0.0, selection='mst'"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  assert "'init_peak': 0.0" in out and "certified epsilon" in out


@pytest.mark.slow
def test_ablate_napsumq_on_twinify_model(capsys):
  assert _load("ablate_napsumq").main(["--quick", "--data", "adult_twinify"]) == 0
  assert "certified epsilon" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_evaluate_memory_quick(capsys):
  assert _load("bench_evaluate_memory").main(["--quick", "--cases", "id", "--rows", "300"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  assert "peak RSS, MiB" in out and re.search(r"^\| id \| 300 \+ 300 rows", out, re.M), out


@pytest.mark.slow
def test_bench_large_data_quick(capsys):
  assert _load("bench_large_data").main(["--quick"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  rows = [l.split("|") for l in out.splitlines() if re.match(r"^\s+[23]0,000 \|", l)]
  assert len(rows) == 2 and rows[1][1].split()[0] == "-"      # the generated store: no encode
  assert all(len(r[2].split()) == 5 for r in rows)


def test_mst_baseline_quick(capsys):
  assert _load("mst_baseline").main(["--quick"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  assert re.search(r"^\| 1 \| 0 \| .* \| \d+\.\d s \|$", out, re.M), out


def test_mst_baseline_tree_model_reproduces_exact_tables():
  """With exact, consistent tables the tree model samples the tree's own distribution."""
  mst = _load("mst_baseline")
  rng = np.random.default_rng(0)
  sizes = [3, 4, 2]
  p0 = np.array([0.5, 0.3, 0.2])
  c01 = rng.dirichlet(np.ones(4), 3)          # P(x1 | x0)
  c12 = rng.dirichlet(np.ones(2), 4)          # P(x2 | x1)
  j01 = p0[:, None] * c01
  j12 = j01.sum(0)[:, None] * c12
  n = 1e6
  ones = [n * p0, n * j01.sum(0), n * j12.sum(0)]
  node, joint = mst._estimate(ones, 1.0, {(0, 1): n * j01.ravel(), (1, 2): n * j12.ravel()},
                              1.0, sizes)
  rows = mst._sample(rng, node, joint, 3, 200_000)
  emp01 = np.zeros((3, 4))
  np.add.at(emp01, (rows[:, 0], rows[:, 1]), 1)
  emp12 = np.zeros((4, 2))
  np.add.at(emp12, (rows[:, 1], rows[:, 2]), 1)
  np.testing.assert_allclose(emp01 / len(rows), j01, atol=0.005)
  np.testing.assert_allclose(emp12 / len(rows), j12, atol=0.005)


def test_ablate_largest_pairs_names_the_broken_pair():
  import pandas as pd
  rng = np.random.default_rng(0)
  a = rng.integers(0, 3, 3000)
  real = pd.DataFrame({"a": a, "b": a, "c": rng.integers(0, 2, 3000)})
  twin = real.copy()
  twin["b"] = rng.permutation(twin["b"].to_numpy())   # breaks a x b only (and b x c slightly)
  out = _load("ablate_napsumq")._largest_pairs(real, twin, 2)
  assert out.startswith("a x b 0.6") or out.startswith("a x b 0.7"), out
  assert _load("ablate_napsumq")._largest_pairs(real, real, 1).endswith(" 0.000")


def test_noise_sources_napsumq_quick(capsys):
  from jtwin import napsumq
  from jtwin.marginals import cells as cl
  before = (napsumq.gaussian_measure, cl.compress)
  assert _load("noise_sources_napsumq").main(["--quick", "--exact", "none", "all"]) == 0
  out = capsys.readouterr().out
  assert "| none |" in out and "| all |" in out
  assert (napsumq.gaussian_measure, cl.compress) == before   # the patches are undone


@pytest.mark.slow
def test_bench_napsumq_large_tiny(capsys):
  """Streamed and in-memory napsumq on a tiny CSV: both run and write the same twin."""
  assert _load("bench_napsumq_large").main(["--quick"]) == 0
  out = capsys.readouterr().out
  _header_ok(out)
  row = [line for line in out.splitlines() if line.startswith("| 3,000 ")]
  assert row and row[0].rstrip().endswith("| yes |"), out
