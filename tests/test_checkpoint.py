"""Checkpoint and resume (`fit(checkpoint=, resume=)`, `jtwin fit --checkpoint/--resume`)."""
import json
import os
import shutil
import stat

import jax
import numpy as np
import pytest

from jtwin import infer
from jtwin.errors import JtwinInputError
from jtwin.models import Feature, make_mixture_model

FEATURES = [Feature("x", "normal"), Feature("c", "categorical", 3), Feature("b", "bernoulli", 2)]
# sigma given and a fixed record: skips the accountant (not what is tested here).
PRIVACY = infer.PrivacyRecord("noise_multiplier", 1.0, None, 1.0, 1e-3, 1.0, 0.2,
                              infer.num_steps(7, 0.2), 1.0, "fixed for the test")
KW = dict(sampling_ratio=0.2, num_epochs=7, privacy=PRIVACY)   # 7 chunks of 5 steps


def _data(n=150, seed=0):
  rng = np.random.default_rng(seed)
  values = np.stack([rng.normal(size=n), rng.integers(0, 3, n), rng.integers(0, 2, n)],
                    1).astype(np.float32)
  return values, np.ones_like(values, bool)


class _Stop(Exception):
  pass


def _interrupt_after(chunks):
  def progress(done, total, epoch):
    if done >= chunks * 5:
      raise _Stop
  return progress


@pytest.fixture(scope="module")
def model():
  return make_mixture_model(FEATURES, 2)


@pytest.fixture(scope="module")
def finished(model, tmp_path_factory):
  """An uninterrupted run that checkpointed (every 10 epochs: only at its end)."""
  ckpt = tmp_path_factory.mktemp("finished") / "ckpt"
  return infer.fit(jax.random.key(3), model, _data(), checkpoint=ckpt, **KW), ckpt


@pytest.fixture()
def uninterrupted(finished):
  return finished[0]


@pytest.fixture()
def short_checkpoint(finished, tmp_path):
  """A copy of the finished run's checkpoint (refusals happen before training)."""
  return shutil.copytree(finished[1], tmp_path / "ckpt")


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a.posterior), jax.tree.leaves(b.posterior)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert set(a.diagnostics) == set(b.diagnostics)
  for k in a.diagnostics:
    np.testing.assert_array_equal(a.diagnostics[k], b.diagnostics[k])
  assert a.privacy == b.privacy


def test_resume_equals_uninterrupted(tmp_path, model, uninterrupted):
  ckpt = tmp_path / "ckpt"
  with pytest.raises(_Stop):       # dies after 5 chunks; the last checkpoint is after 4
    infer.fit(jax.random.key(3), model, _data(), checkpoint=ckpt, checkpoint_every=2,
              progress=_interrupt_after(5), **KW)
  meta = json.loads((ckpt / "checkpoint.json").read_text())
  assert meta["steps_done"] == 20 and meta["position"]["chunk"] == 4
  assert stat.S_IMODE(os.stat(ckpt).st_mode) == 0o700
  for f in os.listdir(ckpt):
    assert stat.S_IMODE(os.stat(ckpt / f).st_mode) == 0o600, f
  assert sorted(os.listdir(ckpt)) == ["checkpoint.json", "state-000004.npz"]
  done = []
  resumed = infer.fit(None, model, _data(), checkpoint=ckpt, resume=True, checkpoint_every=2,
                      progress=lambda d, t, e: done.append(d), **KW)   # the key comes from it
  assert done == [25, 30, 35]                       # only the remaining steps run
  _assert_same(resumed, uninterrupted)
  assert resumed.privacy.steps == 35 == resumed.diagnostics["steps"][-1]
  assert json.loads((ckpt / "checkpoint.json").read_text())["steps_done"] == 35


def test_resume_of_a_finished_run_trains_nothing(tmp_path, model, finished):
  uninterrupted, ckpt = finished
  done = []
  again = infer.fit(jax.random.key(3), model, _data(), checkpoint=ckpt, resume=True,
                    progress=lambda d, t, e: done.append(d), **KW)
  assert done == []
  _assert_same(again, uninterrupted)


@pytest.mark.parametrize("change,match", [
    ("data", "different run \\(the data differ\\)"),
    ("settings", "different run \\(the training settings differ\\)"),
    ("privacy", "the privacy plan"),
    ("model", "the model"),
    ("key", "another key"),
])
def test_a_checkpoint_of_another_run_is_refused(short_checkpoint, model, change, match):
  ckpt = short_checkpoint
  kw = dict(KW)
  key, data, m = jax.random.key(3), _data(), model
  if change == "data":
    data = _data(seed=1)
  elif change == "settings":
    kw["learning_rate"] = 0.1
  elif change == "privacy":
    kw["privacy"] = kw["privacy"]._replace(noise_multiplier=2.0)
  elif change == "model":
    m = make_mixture_model(FEATURES, 3)
  else:
    key = jax.random.key(4)
  with pytest.raises(JtwinInputError, match=match) as e:
    infer.fit(key, m, data, checkpoint=ckpt, resume=True, **kw)
  assert "\n" not in str(e.value)


def test_an_existing_checkpoint_is_not_overwritten_without_resume(short_checkpoint, model):
  ckpt, kw = short_checkpoint, KW
  with pytest.raises(JtwinInputError, match="already holds a checkpoint"):
    infer.fit(jax.random.key(3), model, _data(), checkpoint=ckpt, **kw)


def test_a_damaged_state_file_is_refused(short_checkpoint, model):
  ckpt, kw = short_checkpoint, KW
  (npz,) = [f for f in os.listdir(ckpt) if f.endswith(".npz")]
  with open(ckpt / npz, "r+b") as f:
    f.seek(100)
    f.write(b"\x00\x01\x02")
  with pytest.raises(JtwinInputError, match="damaged"):
    infer.fit(jax.random.key(3), model, _data(), checkpoint=ckpt, resume=True, **kw)


# ------------------------------------------------------------ command line
@pytest.fixture()
def cli_files(tmp_path):
  import pandas as pd
  rng = np.random.default_rng(0)
  n = 300
  pd.DataFrame({"age": rng.integers(18, 90, n), "smoker": rng.choice(["no", "yes"], n)}
               ).to_csv(tmp_path / "data.csv", index=False)
  (tmp_path / "model.txt").write_text("age : Normal ; bounds = 0, 100\n"
                                      "smoker : Bernoulli ; categories = no, yes\n")
  return tmp_path, str(tmp_path / "data.csv"), str(tmp_path / "model.txt")


CLI_FAST = ["-e", "2", "-q", "0.1", "--k", "2", "--visualize", "none", "--quiet"]


@pytest.mark.slow
def test_cli_resume_without_seed_reuses_the_checkpoints_key(cli_files, capsys):
  from jtwin.cli import main
  tmp, data, model = cli_files
  ckpt = str(tmp / "ckpt")
  assert main(["fit", data, model, str(tmp / "a"), "--checkpoint", ckpt] + CLI_FAST) == 0
  # Resuming the finished run (no --seed: the key is the checkpoint's) writes the same twin.
  assert main(["fit", data, model, str(tmp / "b"), "--checkpoint", ckpt, "--resume"]
              + CLI_FAST) == 0
  assert (tmp / "a.csv").read_text() == (tmp / "b.csv").read_text()
  capsys.readouterr()


@pytest.mark.parametrize("flags,needle", [
    (["--resume"], "--resume needs --checkpoint"),
    (["--checkpoint", "{ckpt}"], "already holds a checkpoint; continue it with --resume"),
    (["--checkpoint", "{ckpt}", "--resume", "--seed", "9"], "another --seed"),
    (["--checkpoint", "{ckpt}", "--resume", "-e", "3"], "different run"),
])
def test_cli_checkpoint_errors_are_one_line(cli_files, short_checkpoint, capsys, flags,
                                           needle):
  from jtwin.cli import main
  tmp, data, model = cli_files
  ckpt = short_checkpoint       # written with seed 3's key by the library: another run
  meta = json.loads((ckpt / "checkpoint.json").read_text())
  meta["note"] = {"root_key": np.asarray(jax.random.key_data(jax.random.key(1))).tolist(),
                  "root_key_impl": "threefry2x32"}
  (ckpt / "checkpoint.json").write_text(json.dumps(meta))
  if flags == ["--resume"]:
    shutil.rmtree(ckpt)
  flags = [f.replace("{ckpt}", str(ckpt)) for f in flags]
  code = main(["fit", data, model, str(tmp / "c")] + CLI_FAST + flags)
  err = capsys.readouterr().err
  assert code == 1 and needle in err, err
  errors = [line for line in err.splitlines() if line.startswith("jtwin: error")]
  assert "Traceback" not in err and len(errors) == 1 and needle in errors[0], err


def test_cli_ctrl_c_says_the_checkpoint_continues_the_run(cli_files, short_checkpoint, capsys,
                                                          monkeypatch):
  from jtwin.cli import main

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(infer, "fit", interrupted)
  tmp, data, model = cli_files
  code = main(["fit", data, model, str(tmp / "c"), "--checkpoint", str(short_checkpoint),
               "--resume"] + CLI_FAST)
  err = capsys.readouterr().err
  assert code == 130
  assert f"the checkpoint in {short_checkpoint} (after step 35) continues this run" in err, err
