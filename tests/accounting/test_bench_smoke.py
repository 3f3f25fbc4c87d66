"""The accounting benchmark runs (tiny grid) and prints its table."""
import importlib.util
import pathlib

_BENCH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_accounting.py"


def test_bench_accounting_quick(capsys):
  spec = importlib.util.spec_from_file_location("bench_accounting", _BENCH)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  assert bench.main(["--quick"]) == 0
  out = capsys.readouterr().out
  rows = [line.split() for line in out.splitlines() if line[:1] == " " or line[:1].isdigit()]
  assert len(rows) == 2
  for row in rows:
    eps, upper, acct = float(row[0]), float(row[4]), row[5]
    assert upper <= eps and acct in ("prv", "rdp")
