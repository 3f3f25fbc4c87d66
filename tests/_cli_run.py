"""Helpers of the command-line audit tests: run `jtwin` in-process, list what it
wrote, and insist on one error line without a traceback."""
from jtwin.cli import main


def run(argv, capsys):
  """(exit code, stdout, stderr) of `jtwin ARGV`."""
  code = main(argv)
  out, err = capsys.readouterr()
  return code, out, err


def outputs(tmp):
  """Names of the files under `tmp` whose name starts with 'out'."""
  return sorted(p.name for p in tmp.rglob("*") if p.name.startswith("out"))


def one_error(err):
  """The only line of `err` that says 'error' (asserts there is one, and no traceback)."""
  assert "Traceback" not in err
  lines = [l for l in err.strip().splitlines() if "error" in l]
  assert len(lines) == 1, err
  return lines[0]
