"""The low-level library functions refuse wrong arguments with one clear error
(fourteenth session, the rest of the third bad-input audit): row counts that
are not whole numbers, keys that are not keys, posteriors of another model,
encoded data that does not fit the model, category codes out of range,
infinite values in `evaluate`; `jtwin sample` rounds -n up to whole draws of
--m as twinify does and compresses a .gz/.bz2/.xz/.zip output."""
import bz2
import gzip
import lzma
import zipfile

import jax
import numpy as np
import pandas as pd
import pytest

import jtwin
from _cli_run import one_error, outputs, run
from jtwin.cli import main
from jtwin.evaluate import evaluate
from jtwin.spec import parse_model_text

MODEL = ("a : Categorical ; categories = x, y, z ; missing = no\n"
         "b : Normal ; bounds = -5, 5 ; missing = no\n")
FAST = ["-e", "2", "-q", "0.1", "--k", "2", "--seed", "0", "--visualize", "none", "--quiet"]


def _frame(n=300):
  rng = np.random.default_rng(0)
  return pd.DataFrame({"a": rng.choice(["x", "y", "z"], n), "b": rng.normal(size=n)})


@pytest.fixture(scope="module")
def fitted():
  """(model, encoded data, domain, FitResult) of a 2-component mixture."""
  frame = _frame()
  domain = jtwin.resolve_domain(frame, parse_model_text(MODEL))
  enc = jtwin.encode(frame, domain)
  model = jtwin.make_mixture_model(domain.features(), num_components=2)
  return model, enc, domain, jtwin.fit(0, model, enc, epsilon=1.0, num_epochs=1)


@pytest.fixture(scope="module")
def marginal():
  return jtwin.fit_marginals(0, _frame(), parse_model_text(MODEL), epsilon=1.0,
                             num_components=3, final_steps=20, posterior_steps=5)


def test_make_mixture_model_takes_a_domain(fitted):
  model, _, domain, _ = fitted
  assert jtwin.make_mixture_model(domain, num_components=2).features == model.features


def test_sample_synthetic_takes_an_int_seed_like_a_key(fitted):
  from jtwin._rng import root_key
  model, _, _, res = fitted
  by_int = jtwin.sample_synthetic(7, model, res.posterior, 20)
  by_key = jtwin.sample_synthetic(root_key(7), model, res.posterior, 20)
  np.testing.assert_array_equal(by_int[0], by_key[0])
  assert by_int[0].shape == (20, 2)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"num_rows": -1}, ValueError, "num_rows must be an integer >= 0, got -1"),
    ({"num_rows": 2.5}, TypeError, r"num_rows must be an integer >= 0, got 2.5 \(float\)"),
    ({"num_rows": "5"}, TypeError, "num_rows must be an integer"),
    ({"num_rows": True}, TypeError, "num_rows must be an integer"),
    ({"num_rows": 5, "records_per_draw": 0}, ValueError, "records_per_draw must be an integer >= 1"),
    ({"num_rows": 5, "records_per_draw": 1.5}, TypeError, "records_per_draw must be an integer"),
    ({"num_rows": 5, "key": "seed"}, TypeError, "key must be a jax.random.key or an int seed, got str"),
    ({"num_rows": 5, "key": np.zeros(3)}, TypeError, "an array of dtype float64"),
])
def test_sample_synthetic_refuses_bad_arguments(fitted, kwargs, error, message):
  model, _, _, res = fitted
  kwargs = {"key": jax.random.key(0), **kwargs}
  with pytest.raises(error, match=message):
    jtwin.sample_synthetic(kwargs.pop("key"), model, res.posterior, kwargs.pop("num_rows"),
                           **kwargs)


def test_sample_synthetic_refuses_a_posterior_of_another_k(fitted):
  _, _, domain, res = fitted
  other = jtwin.make_mixture_model(domain.features(), num_components=5)
  with pytest.raises(ValueError, match=r"has shape \(2, .*the model's \(5, .*number of "
                     "components"):
    jtwin.sample_synthetic(0, other, res.posterior, 5)


def test_fit_refuses_encoded_data_that_does_not_fit_the_model(fitted):
  model, (values, observed), _, _ = fitted
  with pytest.raises(ValueError, match=r"data have 1 columns, the model 2 \(a, b\)"):
    jtwin.fit(0, model, (values[:, :1], observed[:, :1]), epsilon=1.0, num_epochs=1)
  for code in (3.0, -1.0, 0.5):
    bad = np.array(values)
    bad[4, 0] = code
    with pytest.raises(ValueError, match=r"data: column 0 \('a'\) has category code "
                       rf"{code:g} in row 4; its codes must be whole numbers 0..2"):
      jtwin.fit(0, model, (bad, observed), epsilon=1.0, num_epochs=1)
  bad = np.array(values)
  bad[4, 0] = 9.0
  hidden = np.array(observed)
  hidden[4, 0] = False      # an unobserved cell's placeholder is never read
  assert jtwin.fit(0, model, (bad, hidden), epsilon=1.0, num_epochs=1).num_examples == len(bad)


@pytest.mark.parametrize("call,error,message", [
    (lambda r: jtwin.sample_marginals(0, r, -1), ValueError, "num_rows must be an integer >= 0"),
    (lambda r: jtwin.sample_marginals(0, r, 2.5), TypeError, "num_rows must be an integer"),
    (lambda r: jtwin.sample_marginals(0, r, 4, records_per_draw=0), ValueError,
     "records_per_draw must be an integer >= 1"),
    (lambda r: jtwin.sample_marginals("a", r, 4), TypeError, "key must be a jax.random.key"),
    (lambda r: jtwin.sample_marginals(0, r.posterior, 4), TypeError,
     "result must be a MarginalResult"),
])
def test_sample_marginals_refuses_bad_arguments(marginal, call, error, message):
  with pytest.raises(error, match=message):
    call(marginal)


def test_sample_marginals_draws_exactly_num_rows(marginal):
  for n, m in ((0, 1), (5, 2), (7, 3)):
    assert len(jtwin.sample_marginals(0, marginal, n, records_per_draw=m)) == n


@pytest.mark.parametrize("table", ["real", "synth", "test"])
def test_evaluate_refuses_infinite_values(table):
  frames = {"real": _frame(), "synth": _frame(), "test": _frame()}
  frames[table] = frames[table].assign(b=np.where(np.arange(300) == 7, -np.inf,
                                                  frames[table]["b"]))
  name = {"real": "real", "synth": "synthetic", "test": "test"}[table]
  with pytest.raises(ValueError, match=rf"the {name} table's column 'b' has 1 infinite "
                     r"value\(s\) \(the first in row 7\)"):
    evaluate(frames["real"], frames["synth"], test=frames["test"])
  nan = frames[table].assign(b=np.where(np.arange(300) == 7, np.nan, frames[table]["b"]))
  frames[table] = nan        # a missing value is fine
  assert evaluate(frames["real"], frames["synth"], test=frames["test"])["tvd_1way_mean"] >= 0


def test_evaluate_command_names_the_file_and_line_of_an_infinite_value(tmp_path, capsys):
  _frame().to_csv(tmp_path / "real.csv", index=False)
  synth = _frame()
  synth.loc[3, "b"] = np.inf
  synth.to_csv(tmp_path / "synth.csv", index=False)
  code, _, err = run(["evaluate", str(tmp_path / "real.csv"), str(tmp_path / "synth.csv")],
                     capsys)
  assert code == 1
  assert one_error(err).endswith(f"{tmp_path / 'synth.csv'}: column 'b' has an infinite value "
                                 "on line 5 (1 in all); give finite numbers, or empty cells "
                                 "for missing values")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("low")
  _frame().to_csv(tmp / "data.csv", index=False)
  (tmp / "model.txt").write_text(MODEL)
  assert main(["fit", str(tmp / "data.csv"), str(tmp / "model.txt"), str(tmp / "fit")]
              + FAST) == 0
  return tmp / "fit.jtwin.npz"


@pytest.mark.parametrize("suffix,opener", [(".csv.gz", gzip.open), (".csv.bz2", bz2.open),
                                           (".csv.xz", lzma.open), (".csv", open)])
def test_sample_output_is_compressed_by_its_name(result, tmp_path, capsys, suffix, opener):
  out = tmp_path / f"out{suffix}"
  code, _, err = run(["sample", str(result), "-n", "30", "-o", str(out), "--seed", "1",
                      "--quiet"], capsys)
  assert code == 0, err
  with opener(out, "rt") as f:       # the compressor's own reader: really compressed
    assert f.readline().strip() == "a,b"
  assert len(pd.read_csv(out)) == 30
  assert outputs(tmp_path) == [out.name]      # no temporary file left


def test_sample_zip_output_holds_one_csv_named_after_it(result, tmp_path, capsys):
  out = tmp_path / "out.csv.zip"
  assert run(["sample", str(result), "-n", "10", "-o", str(out), "--quiet"], capsys)[0] == 0
  assert zipfile.ZipFile(out).namelist() == ["out.csv"]
  assert len(pd.read_csv(out)) == 10


def test_sample_zst_output_without_zstandard_is_one_line(result, tmp_path, capsys, monkeypatch):
  import sys
  monkeypatch.setitem(sys.modules, "zstandard", None)    # import fails
  code, _, err = run(["sample", str(result), "-n", "10", "-o", str(tmp_path / "out.csv.zst")],
                     capsys)
  assert code == 1
  assert "needs the 'zstandard' package" in one_error(err)
  assert outputs(tmp_path) == []


@pytest.mark.parametrize("n,m,rows", [(10, 3, 12), (9, 3, 9), (1, 4, 4), (0, 2, 0)])
def test_sample_rounds_rows_up_to_whole_draws_as_twinify(result, tmp_path, capsys, n, m, rows):
  out = tmp_path / "out.csv"
  code, _, err = run(["sample", str(result), "-n", str(n), "--m", str(m), "-o", str(out),
                      "--quiet"], capsys)
  assert code == 0
  assert len(pd.read_csv(out)) == rows
  assert (f"-n {n} is not a multiple of --m {m}: writing {rows} rows ({rows // m} posterior "
          f"draws of {m} rows), as twinify does" in err) == (rows != n)


def test_fit_separate_output_has_whole_draws(tmp_path, capsys):
  _frame().to_csv(tmp_path / "data.csv", index=False)
  (tmp_path / "model.txt").write_text(MODEL)
  code, _, err = run(["fit", str(tmp_path / "data.csv"), str(tmp_path / "model.txt"),
                      str(tmp_path / "out"), "--num_synthetic", "10", "--m", "4",
                      "--separate_output"] + FAST, capsys)
  assert code == 0, err
  assert "--num_synthetic 10 is not a multiple of --m 4: writing 12 rows" in err
  parts = sorted(p for p in outputs(tmp_path) if p.endswith(".csv"))
  assert parts == ["out.0.csv", "out.1.csv", "out.2.csv"]
  assert [len(pd.read_csv(tmp_path / p)) for p in parts] == [4, 4, 4]
