"""Findings of a bad-input audit of the library and `jtwin sample` (thirteenth
session): result files that are corrupt or edited, custom models that fail at
sampling time, output paths that are devices or links, results whose epsilon
does not cover everything, and library arguments."""
import json
import warnings
import os
import shutil
import stat

import numpy as np
import pandas as pd
import pytest

from jtwin import _atomic
from _cli_run import one_error as _one_error
from _cli_run import outputs as _outputs
from _cli_run import run as _run
from jtwin.cli import main
from jtwin.errors import DataError

FAST = ["-e", "2", "-q", "0.1", "--k", "2", "--seed", "0", "--visualize", "none", "--quiet"]




@pytest.fixture(scope="module")
def vi_result(tmp_path_factory):
  """A `jtwin fit` result of the declared two-column model (age Normal, job Categorical)."""
  tmp = tmp_path_factory.mktemp("vi")
  rng = np.random.default_rng(0)
  pd.DataFrame({"age": rng.integers(18, 90, 300), "job": rng.choice(["a", "b", "c"], 300)}
               ).to_csv(tmp / "data.csv", index=False)
  (tmp / "model.txt").write_text("age : Normal ; bounds = 0, 100 ; integer ; missing = no\n"
                                 "job : Categorical ; categories = a, b, c ; missing = no\n")
  assert main(["fit", str(tmp / "data.csv"), str(tmp / "model.txt"), str(tmp / "out")]
              + FAST) == 0
  return tmp / "out.jtwin.npz"


def _tampered(src, dst, *, meta=None, arrays=None):
  """A copy of result `src` at `dst` with `meta(meta_dict)` / `arrays(dict)` edits applied."""
  with np.load(src) as z:
    a = {k: z[k] for k in z.files}
  m = json.loads(a.pop("meta.json").tobytes())
  if meta is not None:
    m = meta(m)
  if arrays is not None:
    arrays(a)
  a["meta.json"] = np.frombuffer(json.dumps(m).encode(), np.uint8)
  np.savez(dst, **a)
  return str(dst)


def _nan_loc(a):
  key = next(k for k in a if k.startswith("loc/"))
  a[key] = np.full_like(a[key], np.nan)


def _huge_scale(a):
  for k in [k for k in a if k.startswith("raw_scale/")]:
    a[k] = np.full_like(a[k], 1e30)


def _int_params(a):
  for k in [k for k in a if k.startswith("loc/")]:
    a[k] = a[k].astype(np.int64)


def _set(path, value):
  def edit(m):
    node = m
    for p in path[:-1]:
      node = node[p]
    node[path[-1]] = value
    return m
  return edit


@pytest.mark.parametrize("meta,arrays,needle", [
    (lambda m: [m], None, "corrupt metadata in result file (no model description)"),
    (lambda m: {k: v for k, v in m.items() if k != "model"}, None, "no model description"),
    (_set(["model", "kind"], "weird"), None, "unsupported model kind 'weird'"),
    (_set(["format_version"], "x"), None, "unsupported result format"),
    (_set(["domain"], None), None, "its domain does not match its model's columns"),
    (_set(["domain", "columns", 1, "categories"], ["a"]), None, "its domain does not match"),
    (_set(["model", "num_components"], 5), None, "does not match the model (parameter shapes)"),
    (None, _nan_loc, "is not all finite floating-point numbers"),
    (None, _int_params, "is not all finite floating-point numbers"),
    (None, _huge_scale, "sampling gave non-finite values: the result file is corrupt"),
])
def test_an_edited_result_file_is_one_line_and_writes_nothing(vi_result, tmp_path, capsys,
                                                             meta, arrays, needle):
  bad = _tampered(vi_result, tmp_path / "bad.jtwin.npz", meta=meta, arrays=arrays)
  code, _, err = _run(["sample", bad, "-n", "20", "-o", str(tmp_path / "o.csv"), "--quiet"],
                      capsys)
  line = _one_error(err)
  assert code == 1 and needle in line and "bad.jtwin.npz" in line
  assert not (tmp_path / "o.csv").exists()


def test_the_untouched_result_still_samples(vi_result, tmp_path, capsys):
  code, _, err = _run(["sample", str(vi_result), "-n", "20", "-o", str(tmp_path / "o.csv"),
                       "--quiet"], capsys)
  assert code == 0 and err == ""
  assert len(pd.read_csv(tmp_path / "o.csv")) == 20


def test_load_refuses_a_corrupt_result_too(vi_result, tmp_path):
  import jtwin
  from jtwin.errors import JtwinInputError
  bad = _tampered(vi_result, tmp_path / "bad.jtwin.npz", arrays=_nan_loc)
  with pytest.raises(JtwinInputError, match="bad.jtwin.npz: corrupt result file"):
    jtwin.load(bad)


@pytest.mark.parametrize("edit,warning", [
    (_set(["privacy", "mode"], "non-private"), "NO differential privacy"),
    (_set(["inferred_from_data"], ["age: standardisation (mean/std)"]),
     "NOT covered by the epsilon guarantee"),
])
def test_sample_and_load_repeat_what_epsilon_does_not_cover(vi_result, tmp_path, capsys,
                                                           edit, warning):
  import jtwin
  path = _tampered(vi_result, tmp_path / "r.jtwin.npz", meta=edit)
  code, _, err = _run(["sample", path, "-n", "5", "-o", str(tmp_path / "o.csv"), "--quiet"],
                      capsys)
  assert code == 0 and warning in err                 # a warning: --quiet does not hide it
  with pytest.warns(UserWarning, match=warning):
    jtwin.load(path)


# ------------------------------------------------------------------ custom models

@pytest.fixture(scope="module")
def custom_result(tmp_path_factory):
  from jtwin.examples import custom_model
  tmp = tmp_path_factory.mktemp("custom")
  shutil.copy(custom_model.__file__, tmp / "my_model.py")
  rng = np.random.default_rng(0)
  pd.DataFrame({"age": rng.integers(17, 90, 500), "hours_per_week": rng.integers(1, 99, 500)}
               ).to_csv(tmp / "d.csv", index=False)
  assert main(["fit", str(tmp / "d.csv"), str(tmp / "my_model.py"), str(tmp / "out"), "-e", "2",
               "-q", "0.1", "--seed", "0", "--visualize", "none", "--quiet"]) == 0
  return tmp


def test_a_custom_result_samples_zero_rows_as_a_header(custom_result, tmp_path, capsys):
  code, _, err = _run(["sample", str(custom_result / "out.jtwin.npz"), "-n", "0", "-o",
                       str(tmp_path / "o.csv"), "--quiet"], capsys)
  assert code == 0, err
  assert (tmp_path / "o.csv").read_text().strip() == "age,hours_per_week"


@pytest.mark.parametrize("extra,needle", [
    (["--sampling", "balanced"], "balanced sampling needs jtwin's mixture"),
    (["--model", "MODEL_TXT"], "the custom model must be its .py file"),
])
def test_custom_result_option_errors_are_one_line(custom_result, tmp_path, capsys, extra, needle):
  (tmp_path / "model.txt").write_text("age : Normal\n")
  extra = [str(tmp_path / "model.txt") if e == "MODEL_TXT" else e for e in extra]
  code, _, err = _run(["sample", str(custom_result / "out.jtwin.npz"), "-n", "5", "-o",
                       str(tmp_path / "o.csv"), "--quiet"] + extra, capsys)
  assert code == 1 and needle in _one_error(err)
  assert not (tmp_path / "o.csv").exists()


BROKEN = {
    "postprocess_raises": ("def postprocess(df):\n  raise KeyError('nope')\n",
                           "postprocess() failed: KeyError"),
    "postprocess_returns_int": ("def postprocess(df):\n  return 5\n",
                                "postprocess() must return a pandas DataFrame, got int"),
    "sample_gives_inf": (
        "_plain_make = make_model\n"
        "def make_model(columns):\n"
        "  import dataclasses, jax.numpy as jnp\n"
        "  m = _plain_make(columns)\n"
        "  def sample(key, theta, n):\n"
        "    v, o = m.sample(key, theta, n)\n"
        "    return jnp.full_like(v, jnp.inf), o\n"
        "  return m._replace(sample=sample)\n"
        "postprocess = None\n",
        "sample() returned non-finite values where observed"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_custom_model_failing_at_sampling_is_one_line(custom_result, tmp_path, capsys, name):
  code_text, needle = BROKEN[name]
  model = tmp_path / "broken.py"
  model.write_text((custom_result / "my_model.py").read_text() + "\n" + code_text)
  code, _, err = _run(["sample", str(custom_result / "out.jtwin.npz"), "-n", "5", "-o",
                       str(tmp_path / "o.csv"), "--model", str(model), "--quiet"], capsys)
  assert code == 1 and needle in _one_error(err)
  assert not (tmp_path / "o.csv").exists()


# ------------------------------------------------------------------ output paths

def test_atomic_write_writes_a_device_without_replacing_it():
  if not os.path.exists("/dev/null"):
    pytest.skip("no /dev/null")
  _atomic.check_output_path("/dev/null")
  with _atomic.atomic_write("/dev/null") as f:
    f.write("a,b\n1,2\n")
  assert stat.S_ISCHR(os.stat("/dev/null").st_mode)          # still the device


def test_atomic_write_follows_a_link_and_keeps_it(tmp_path):
  (tmp_path / "real.csv").write_text("old\n")
  os.symlink("real.csv", tmp_path / "link.csv")
  with _atomic.atomic_write(tmp_path / "link.csv") as f:
    f.write("new\n")
  assert os.path.islink(tmp_path / "link.csv")
  assert (tmp_path / "real.csv").read_text() == "new\n"


def test_an_empty_output_path_is_refused():
  with pytest.raises(DataError, match="names no file"):
    _atomic.check_output_path("")


@pytest.mark.parametrize("where,needle", [("DIR", "is a directory"),
                                          ("nodir/x.jtwin.npz", "does not exist")])
def test_saving_a_result_checks_its_path_first(vi_result, tmp_path, where, needle):
  import jtwin
  synth = jtwin.load(str(vi_result))
  target = str(tmp_path) if where == "DIR" else str(tmp_path / where)
  with pytest.raises(DataError, match=needle):
    synth.save(target)
  assert sorted(os.listdir(tmp_path)) == []                  # no temporary file left


# ------------------------------------------------------------------ library arguments

def test_rubin_refuses_negative_variances_and_zero_rows():
  from jtwin import rubin
  with pytest.raises(ValueError, match="variances must be finite and >= 0"):
    rubin.combine([1.0, 1.2, 0.9], [-0.5] * 3)
  with pytest.raises(ValueError, match="n_original must be > 0"):
    rubin.combine([1.0, 1.2, 0.9], [0.5] * 3, n_synthetic=100, n_original=0)


def test_fit_marginals_refuses_a_learning_rate_that_is_not_a_positive_number():
  from jtwin.errors import JtwinInputError
  from jtwin.napsumq import fit_marginals
  from jtwin.spec import parse_model_text
  df = pd.DataFrame({"a": ["x", "y"] * 100})
  spec = parse_model_text("a : Categorical ; categories = x, y ; missing = no\n")
  with pytest.raises(JtwinInputError, match="learning_rate must be a finite number > 0"):
    fit_marginals(0, df, spec, learning_rate=float("nan"))


def test_a_tiny_table_warns_of_its_large_default_delta():
  from jtwin import dp_domain as dd
  from jtwin.spec import parse_model_text
  spec = parse_model_text("a : Categorical ; categories = x, y ; missing = no\n")
  frame = pd.DataFrame({"a": ["x", "y"] * 15})
  # epsilon 50: the row count's noise sd is 2.8 rows, so about 30 rows are measured well,
  # and delta = 0.1 / 30 is large
  with pytest.warns(UserWarning, match="the table is tiny"):
    plan = dd.plan_release(np.random.default_rng(0), frame, spec, epsilon=50.0, delta=None)
  assert plan.delta > dd.LARGE_DEFAULT_DELTA
  assert plan.delta == pytest.approx(0.1 / plan.rows)
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("error")                            # a chosen delta: no warning
    dd.plan_release(np.random.default_rng(0), frame, spec, epsilon=1.0, delta=1e-6)


@pytest.mark.parametrize("epsilon,rows", [(1.0, 6), (1e-3, 2000), (1e-3, 10**6)])
def test_a_noise_dominated_row_count_never_gives_a_large_default_delta(epsilon, rows):
  """Audit 4: at epsilon 1e-3 the DP row count of 2,000 rows (noise sd 141,421) was
  clamped at 1 on half the seeds, and the default delta became 0.1."""
  from jtwin import dp_domain as dd
  from jtwin.spec import parse_model_text
  spec = parse_model_text("a : Categorical ; categories = x, y ; missing = no\n")
  frame = pd.DataFrame({"a": np.resize(["x", "y"], rows)})
  sd = dd.row_count_sd(dd.ROWS_FRACTION * epsilon)
  for seed in range(6):
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      plan = dd.plan_release(np.random.default_rng(seed), frame, spec, epsilon=epsilon,
                             delta=None)
    assert plan.delta == pytest.approx(0.1 / max(plan.rows, 3 * sd), rel=1e-12)
    assert plan.delta <= 0.1 / (3 * sd) * (1 + 1e-12)
    noisy = plan.rows < 3 * sd
    assert any("within 3 noise sds" in str(w.message) for w in caught) == noisy
    assert not any("the table is tiny" in str(w.message) for w in caught)


def test_row_count_sd_is_the_two_sided_geometric_sd():
  from jtwin import dp_domain as dd
  rng = np.random.default_rng(0)
  draws = [dd.noisy_row_count(rng, 10**6, 0.05) - 10**6 for _ in range(20000)]
  assert np.std(draws) == pytest.approx(dd.row_count_sd(0.05), rel=0.03)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(epsilon="1"), "epsilon must be a finite number > 0, got '1'"),
    (dict(epsilon=-1.0), "epsilon must be a finite number > 0"),
    (dict(delta=-1.0), "delta must be a number in (0, 1)"),
    (dict(num_components=0), "num_components must be an integer >= 1"),
    (dict(num_components=2.5), "num_components must be an integer >= 1"),
    (dict(bogus=1), "unknown option 'bogus' for method 'vi'"),
    (dict(method="napsumq", steps=10), "unknown option 'steps' for method 'napsumq'"),
])
def test_synthesizer_refuses_bad_arguments_before_any_data(kwargs, needle):
  import re
  import jtwin
  from jtwin.errors import JtwinInputError
  with pytest.raises(JtwinInputError, match=re.escape(needle)):
    jtwin.Synthesizer("age : Normal\n", **kwargs)


@pytest.mark.parametrize("kwargs", [dict(num_epochs=3, sampling_ratio=0.1),
                                    dict(method="napsumq", final_steps=10, target="age")])
def test_synthesizer_accepts_the_options_of_its_method(kwargs):
  import jtwin
  assert jtwin.Synthesizer("age : Normal\n", **kwargs).options


def test_a_twin_larger_than_memory_is_refused_before_it_is_drawn(vi_result, tmp_path, capsys):
  from jtwin.sampling import check_output_size
  check_output_size(1000, 10, "-n")                                   # small: fine
  code, _, err = _run(["sample", str(vi_result), "-n", str(10**13), "-o",
                       str(tmp_path / "o.csv"), "--quiet"], capsys)
  line = _one_error(err)
  assert code == 1 and "-n 10,000,000,000,000 rows x 2 columns would need about" in line
  assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("kwargs,needle", [
    (dict(backend="zz"), "backend must be 'auto', 'sklearn' or 'numpy'"),
    (dict(synth=pd.DataFrame({"a": []})), "the synthetic table has no rows"),
    (dict(real=np.zeros((3, 1))), "real must be a pandas DataFrame, got ndarray"),
])
def test_evaluate_refuses_what_it_cannot_score(kwargs, needle):
  import re
  from jtwin.evaluate.core import evaluate
  args = {"real": pd.DataFrame({"a": [1, 2, 3]}), "synth": pd.DataFrame({"a": [1, 2, 2]})}
  args.update(kwargs)
  with pytest.raises(ValueError, match=re.escape(needle)):
    evaluate(args.pop("real"), args.pop("synth"), **args)


@pytest.mark.parametrize("frame,needle", [
    (lambda d: d.iloc[:0], "data: the data set has no rows"),
    (lambda d: pd.concat([d, d[["age"]]], axis=1), "the column name(s) age appear more than once"),
])
def test_synthesizer_names_an_empty_frame_and_a_repeated_column(frame, needle):
  import re
  import jtwin
  df = pd.DataFrame({"age": [20, 30, 40] * 20, "job": ["a", "b", "c"] * 20})
  model = ("age : Normal ; bounds = 0, 100 ; integer ; missing = no\n"
           "job : Categorical ; categories = a, b, c ; missing = no\n")
  with pytest.raises(DataError, match=re.escape(needle)):
    jtwin.Synthesizer(model, num_epochs=1).fit(frame(df))


def test_an_epsilon_beyond_the_category_thresholds_floats_is_one_line():
  from jtwin import dp_domain as dd
  from jtwin.errors import JtwinInputError
  from jtwin.spec import parse_model_text
  frame = pd.DataFrame({"a": ["x", "y"] * 100})
  with pytest.raises(JtwinInputError, match="epsilon 1000 is too large for the DP domain step"):
    dd.plan_release(np.random.default_rng(0), frame, parse_model_text("a : Categorical\n"),
                    epsilon=1000.0, delta=1e-6, composition="zcdp")


def test_sample_to_standard_output_prints_only_the_csv(vi_result, tmp_path, capsys,
                                                       monkeypatch):
  monkeypatch.chdir(tmp_path)
  code, out, err = _run(["sample", str(vi_result), "-n", "4", "-o", "-"], capsys)
  assert code == 0 and err == ""
  assert out.splitlines()[0] == "age,job" and len(out.splitlines()) == 5   # no summary line
  assert os.listdir(tmp_path) == []                                        # no file named '-'
