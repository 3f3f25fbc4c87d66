"""The high-level library API: jtwin.Synthesizer, jtwin.load, jtwin.fit's inputs."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import jtwin
from jtwin import errors

SPEC = """\
age : Normal ; bounds = 0, 100 ; integer ; missing = no
job : Categorical ; categories = a, b, c ; missing = no
smoker : Bernoulli ; categories = no, yes ; missing = no
"""
FAST = dict(num_epochs=2, sampling_ratio=0.1)


@pytest.fixture
def df():
  rng = np.random.default_rng(0)
  n = 200
  return pd.DataFrame({"age": rng.integers(18, 90, n), "job": rng.choice(["a", "b", "c"], n),
                       "smoker": rng.choice(["no", "yes"], n)})


def test_synthesizer_fit_sample_save_load(df, tmp_path):
  synth = jtwin.Synthesizer(SPEC, epsilon=1.0, seed=0, num_components=3, **FAST)
  assert synth.fit(df) is synth
  assert synth.privacy.epsilon <= 1.0 and synth.privacy.steps == 20
  assert synth.inferred_from_data == []          # every domain declared
  a, b = synth.sample(50), synth.sample(50)
  assert list(a.columns) == ["age", "job", "smoker"] and len(a) == 50
  assert set(a["job"]) <= {"a", "b", "c"}
  assert not a.equals(b)                          # a new key per call
  path = tmp_path / "twin.jtwin.npz"
  synth.save(path)
  again = jtwin.load(path)
  assert again.method == "vi"
  assert again.privacy == synth.privacy
  # the same posterior: the same rows for the same explicit seed
  pd.testing.assert_frame_equal(again.sample(50, seed=5), synth.sample(50, seed=5))
  # the file written by save() is the CLI's result file
  from jtwin.result_io import load_result
  assert load_result(str(path)).meta["model"]["kind"] == "mixture"


@pytest.mark.slow
def test_synthesizer_model_file_path_and_create(df, tmp_path):
  model = tmp_path / "model.txt"
  model.write_text(SPEC)
  synth = jtwin.Synthesizer.create("vi", model=str(model), epsilon=2.0, seed=1,
                                   num_components=2, **FAST)
  twin = synth.fit_sample(df)
  assert len(twin) == round(synth.num_rows_estimate)    # the DP row count, not N itself
  assert abs(len(twin) - len(df)) < 100
  assert synth.privacy.epsilon <= 2.0


def test_sample_keys_never_reuse_fit_keys(df):
  """An explicit sample seed equal to the fit seed does not replay the fit's keys."""
  import jax
  from jtwin import synthesizer
  s = jtwin.Synthesizer(SPEC, seed=7)
  fit_keys = {tuple(np.asarray(jax.random.key_data(jax.random.fold_in(
      jax.random.fold_in(s._root_key(), synthesizer._FIT_TAG), i))).tolist()) for i in range(3)}
  keys = {tuple(np.asarray(jax.random.key_data(s._sample_key(None))).tolist()) for _ in range(3)}
  keys.add(tuple(np.asarray(jax.random.key_data(s._sample_key(7))).tolist()))
  assert len(keys) == 4 and len(fit_keys) == 3 and not fit_keys & keys


def test_refitting_draws_fresh_noise(df, monkeypatch):
  """Two fit() calls on one object never reuse the first fit's noise keys."""
  import jax
  from jtwin import infer
  used = []

  def fake_fit(key, *args, **kwargs):
    used.append(tuple(np.asarray(jax.random.key_data(key)).tolist()))
    raise KeyboardInterrupt          # stop before training: only the key matters here
  monkeypatch.setattr(infer, "fit", fake_fit)
  s = jtwin.Synthesizer(SPEC, seed=3, **FAST)
  for _ in range(2):
    with pytest.raises(KeyboardInterrupt):
      s.fit(df)
  assert len(used) == 2 and used[0] != used[1]


@pytest.mark.slow
def test_synthesizer_napsumq(df, tmp_path):
  synth = jtwin.Synthesizer(SPEC, method="napsumq", epsilon=1.0, seed=0, num_components=4,
                            final_steps=20, posterior_steps=10)
  synth.fit(df)
  assert synth.privacy.epsilon <= 1.0 and synth.num_rows_estimate > 0
  twin = synth.sample(40)
  assert list(twin.columns) == ["age", "job", "smoker"] and len(twin) == 40
  synth.save(tmp_path / "m.jtwin.npz")
  again = jtwin.load(tmp_path / "m.jtwin.npz")
  assert again.method == "napsumq" and again.privacy == synth.privacy
  pd.testing.assert_frame_equal(again.sample(20, seed=3), synth.sample(20, seed=3))
  assert len(synth.sample(20, seed=3, sampling="iid", records_per_draw=4)) == 20
  with pytest.raises(errors.JtwinInputError, match="records_per_draw"):
    synth.sample(20, sampling="balanced", records_per_draw=4)
  with pytest.raises(errors.JtwinInputError, match="sampling must be one of"):
    synth.sample(20, sampling="stratified")


def test_synthesizer_refuses_huge_epsilon_and_large_delta(df):
  with pytest.raises(errors.UnsafeEpsilonError, match="allow_large_epsilon"):
    jtwin.Synthesizer(SPEC, epsilon=1e6).fit(df)
  # a fixed seed: the DP row count of 200 rows (1% of epsilon) falls below 2 for
  # about 7% of seeds, and then delta = 0.5 is not above 1 / rows
  with pytest.raises(errors.UnsafeDeltaError, match="allow_large_delta"):
    jtwin.Synthesizer(SPEC, delta=0.5, seed=0).fit(df)
  with pytest.raises(TypeError, match="DataFrame"):
    jtwin.Synthesizer(SPEC).fit(df.to_numpy())


def test_unfitted_and_missing_model_file(tmp_path):
  with pytest.raises(errors.JtwinInputError, match="not fitted"):
    jtwin.Synthesizer(SPEC).sample(3)
  with pytest.raises(errors.JtwinInputError, match="not found"):
    jtwin.Synthesizer(str(tmp_path / "nope.txt"))


def test_fit_takes_int_seed_and_explains_dataframes(df):
  from jtwin.spec import parse_model_text
  spec = parse_model_text(SPEC)
  domain = jtwin.resolve_domain(df, spec)
  model = jtwin.make_mixture_model(domain.features(), 2)
  with pytest.raises(TypeError, match=r"jtwin.encode\(df, domain\)"):
    jtwin.fit(0, model, df)
  with pytest.raises(TypeError, match="key must be"):
    jtwin.fit("0", model, jtwin.encode(df, domain), **FAST)
  result = jtwin.fit(0, model, jtwin.encode(df, domain), **FAST)   # an int seed
  assert result.privacy.steps == 20


@pytest.mark.slow
def test_rebuild_result_is_public(df, tmp_path):
  synth = jtwin.Synthesizer(SPEC, seed=0, num_components=2, **FAST).fit(df)
  synth.save(tmp_path / "r.jtwin.npz")
  import jax
  model, posterior, decode = jtwin.rebuild_result(jtwin.load_result(str(tmp_path / "r.jtwin.npz")))
  values, observed = jtwin.sample_synthetic(jax.random.key(0), model, posterior, 10)
  assert list(decode(values, observed).columns) == ["age", "job", "smoker"]


def test_inferred_from_data_is_a_list_and_still_callable(df):
  from jtwin.spec import parse_model_text
  domain = jtwin.resolve_domain(df, parse_model_text("age : Normal\njob : Categorical\n"))
  items = domain.inferred_from_data
  assert isinstance(items, list) and len(items) == 2 and items[1].startswith("job:")
  assert domain.inferred_from_data() == items


@pytest.mark.slow
def test_library_example_runs(tmp_path):
  example = os.path.join(os.path.dirname(jtwin.__file__), "examples", "library_example.py")
  proc = subprocess.run([sys.executable, example, "--quick", str(tmp_path)],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  assert "certified" in proc.stdout and os.path.exists(tmp_path / "adult_twin.jtwin.npz")


@pytest.mark.slow
def test_synthesizer_releases_undeclared_domains_under_dp_like_the_cli():
  rng = np.random.default_rng(1)
  df = pd.DataFrame({"age": rng.integers(18, 90, 3000), "job": rng.choice(["a", "b", "c"], 3000)})
  text = "age : Normal ; bounds = 0, 100 ; integer ; missing = no\njob : Categorical\n"
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    synth = jtwin.Synthesizer(text, epsilon=1.0, seed=0, num_components=2, **FAST).fit(df)
  assert synth.inferred_from_data == []                 # nothing read off the data...
  assert not any("NOT covered" in str(w.message) for w in caught)
  assert synth.public_spec.features[1].categories is not None   # ...released under DP instead
  assert synth.privacy.epsilon <= 1.0 and "domain" in synth.privacy.accountant
  with pytest.warns(UserWarning, match="NOT covered"):
    loose = jtwin.Synthesizer(text, domain="data", seed=0, num_components=2, **FAST).fit(df)
  assert any(item.startswith("job:") for item in loose.inferred_from_data)


def test_plan_defaults_are_jtwin_fits():
  import inspect
  from jtwin import infer, synthesizer
  params = inspect.signature(infer.fit).parameters
  assert {k: params[k].default for k in synthesizer._PLAN_DEFAULTS} == synthesizer._PLAN_DEFAULTS
