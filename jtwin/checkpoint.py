"""Checkpoint and resume of a DP-VI run (`fit(checkpoint=DIR, resume=True)`).

A checkpoint is a directory (created with mode 0700) holding two files,
each written atomically with mode 0600, no pickle:

  state-<chunks>.npz   the `TrainState` leaves (parameters, Adam state, the
                       iterate average, the step count, the next draw, the
                       noise key) as plain arrays;
  checkpoint.json      what the host loop needs to continue exactly where it
                       stopped (chunks done, the batch sampler's state, the
                       padded widths, the per-epoch diagnostics so far), the
                       run's key, the run's privacy plan, a fingerprint of
                       the data and settings, and the npz's name and SHA-256.

The JSON is written after the npz it names, so a crash between the two
leaves the previous checkpoint valid. Resuming continues to the same T with
the same keys and batches: the result equals an uninterrupted run's (on the
same number of devices; up to rounding on another), and the privacy record
counts every step once, those before the interruption included.

SECRET: a checkpoint holds the run's PRNG key and the batch sampler's state,
from which the DP noise and the batches can be recomputed; with the
checkpoint's parameters that undoes the privacy of the result. Keep it as
private as the data and delete it after the run.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from jtwin.errors import JtwinInputError

FORMAT = "jtwin-checkpoint-1"
META = "checkpoint.json"


class LoopPosition(NamedTuple):
  """Where the host loop stands between two chunks.

  Attributes:
    chunk: chunks done.
    rng_state: the batch sampler's (numpy `bit_generator.state`) before
      drawing chunk `chunk`.
    width: the global padded batch width at that point.
    shard_width: the per-shard width (data-parallel runs; 0 otherwise).
    devices: the number of devices the loop ran on.
    diagnostics: the per-epoch diagnostic lists so far.
  """
  chunk: int
  rng_state: dict
  width: int
  shard_width: int
  devices: int
  diagnostics: dict


class Loaded(NamedTuple):
  """A checkpoint read back (`Checkpointer.load`)."""
  key_data: np.ndarray
  key_impl: str
  leaves: list
  position: LoopPosition
  note: dict


def _sha256(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.asarray(a)
    a = a if a.ndim else np.ascontiguousarray(a)   # a scalar is hashed as shape (1,)
    h.update(str((a.dtype.str, a.shape)).encode())
    rows = max(1, (64 << 20) // max(a[:1].nbytes, 1))
    for start in range(0, len(a), rows):            # in blocks: bounded memory (memmaps)
      h.update(np.ascontiguousarray(a[start:start + rows]).tobytes())
  return h.hexdigest()


def fingerprint(values: np.ndarray, observed: np.ndarray, model, plan, settings: dict) -> dict:
  """What must not change between a run and its resumption (JSON-able).

  Args:
    values, observed: the encoded data (hashed: the hash is as secret as
      the checkpoint).
    model: the `Model` (its parameter shapes).
    plan: the `FitPlan` (privacy record and schedule).
    settings: the other settings that shape the run (learning rate, ...).
  """
  import jax
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  privacy = {k: (v if not isinstance(v, float) or np.isfinite(v) else repr(v))
             for k, v in plan.privacy._asdict().items()}
  return {"data": {"rows": int(values.shape[0]), "columns": int(values.shape[1]),
                   "sha256": _sha256(values, observed)},
          "model": str(jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), shapes)),
          "privacy": privacy,
          "schedule": {"chunk": plan.chunk, "num_chunks": plan.num_chunks,
                       "noise_std": plan.noise_std, "average_decay": plan.average_decay,
                       **settings}}


def _host(x) -> np.ndarray:
  """A (replicated) array's value on this host, key arrays as their key data."""
  import jax
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if hasattr(x, "addressable_shards") and not x.is_fully_addressable:
    x = x.addressable_shards[0].data        # replicated: every process holds it all
  return np.asarray(x)


class Checkpointer:
  """Writes and reads the checkpoints of one run in `directory`.

  Args:
    directory: the checkpoint directory (created with mode 0700 if missing).
    fingerprint: `fingerprint(...)` of this run; a checkpoint with another
      one is refused.
    every: write after every `every` chunks (epochs) and after the last.
    note: a JSON-able dict stored with the checkpoint (the command line
      keeps its root key there).
  """

  def __init__(self, directory, fingerprint: dict, every: int = 10,
               note: Optional[dict] = None):
    if not isinstance(every, (int, np.integer)) or every < 1:
      raise JtwinInputError(f"checkpoint_every must be a positive integer, got {every!r}")
    self.directory = os.fspath(directory)
    self.fingerprint = json.loads(json.dumps(fingerprint))   # as it will read back
    self.every = int(every)
    self.note = dict(note or {})
    self.key_data: Optional[np.ndarray] = None
    self.key_impl = "threefry2x32"

  @property
  def meta_path(self) -> str:
    return os.path.join(self.directory, META)

  def exists(self) -> bool:
    return os.path.isfile(self.meta_path)

  def load(self) -> Optional[Loaded]:
    """The checkpoint in the directory (None if there is none).

    Raises:
      JtwinInputError: unreadable, damaged, or from different data or
        settings (one line saying which).
    """
    if not self.exists():
      return None
    meta = read_meta(self.directory)
    if meta.get("format") != FORMAT:
      raise JtwinInputError(f"{self.directory}: not a jtwin checkpoint (format "
                            f"{meta.get('format')!r})")
    saved = meta["fingerprint"]
    differ = [name for name in ("data", "model", "privacy", "schedule")
              if saved.get(name) != self.fingerprint.get(name)]
    if differ:
      what = {"data": "the data", "model": "the model", "privacy": "the privacy plan",
              "schedule": "the training settings"}
      raise JtwinInputError(
          f"{self.directory}: the checkpoint is from a different run ("
          + ", ".join(what[d] for d in differ) + " differ); resume with the same data and "
          "settings, or remove it or choose another checkpoint directory")
    path = os.path.join(self.directory, meta["state_file"])
    try:
      with open(path, "rb") as f:
        blob = f.read()
    except OSError as e:
      raise JtwinInputError(f"{path}: cannot read the checkpoint state: {e.strerror}") from None
    if hashlib.sha256(blob).hexdigest() != meta["state_sha256"]:
      raise JtwinInputError(f"{path}: the checkpoint state is damaged (checksum mismatch)")
    if meta.get("position_sha256") != _position_digest(meta):
      raise JtwinInputError(f"{self.meta_path}: the checkpoint's position (steps done, key) "
                            "does not match its state (edited, or from an older jtwin); "
                            "remove the checkpoint directory and start afresh")
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
      leaves = [z[f"leaf_{i}"] for i in range(meta["num_leaves"])]
    p = meta["position"]
    position = LoopPosition(int(p["chunk"]), p["rng_state"], int(p["width"]),
                            int(p["shard_width"]), int(p["devices"]),
                            {k: list(v) for k, v in p["diagnostics"].items()})
    return Loaded(np.asarray(meta["key"]["data"], np.uint32), meta["key"]["impl"], leaves,
                  position, meta.get("note", {}))

  def restore(self, template, loaded: Loaded):
    """`template` (a fresh `TrainState`) with the checkpoint's leaves."""
    import jax
    import jax.numpy as jnp
    leaves, treedef = jax.tree.flatten(template)
    if len(leaves) != len(loaded.leaves):
      raise JtwinInputError(f"{self.directory}: the checkpoint does not match this run's "
                            "training state")
    out = []
    for t, x in zip(leaves, loaded.leaves):
      if jax.dtypes.issubdtype(t.dtype, jax.dtypes.prng_key):
        out.append(jax.random.wrap_key_data(jnp.asarray(x), impl=jax.random.key_impl(t)))
        continue
      if tuple(x.shape) != tuple(t.shape) or x.dtype != t.dtype:
        raise JtwinInputError(f"{self.directory}: the checkpoint does not match this run's "
                              "training state")
      out.append(jnp.asarray(x))
    return jax.tree.unflatten(treedef, out)

  def set_key(self, key) -> None:
    """Records the run's root key (typed JAX key), stored with every checkpoint."""
    import jax
    self.key_data = np.asarray(jax.random.key_data(key)).astype(np.uint32)
    self.key_impl = str(jax.random.key_impl(key))

  def maybe_save(self, state, position: LoopPosition, num_chunks: int) -> bool:
    """Saves after every `every` chunks and after the last; returns whether it did."""
    if position.chunk % self.every and position.chunk != num_chunks:
      return False
    self.save(state, position)
    return True

  def save(self, state, position: LoopPosition) -> None:
    """Writes the state npz, then the JSON naming it (both atomic, mode 0600)."""
    import jax
    from jtwin._atomic import atomic_write
    if jax.process_index() != 0:
      return
    if self.key_data is None:
      raise ValueError("Checkpointer.set_key must be called before save")
    _make_private_dir(self.directory)
    leaves = [_host(x) for x in jax.tree.leaves(state)]
    buffer = io.BytesIO()
    np.savez(buffer, **{f"leaf_{i}": x for i, x in enumerate(leaves)})
    blob = buffer.getvalue()
    name = f"state-{position.chunk:06d}.npz"
    with atomic_write(os.path.join(self.directory, name), "wb", file_mode=0o600) as f:
      f.write(blob)
    previous = read_meta(self.directory).get("state_file") if self.exists() else None
    meta = {"format": FORMAT, "fingerprint": self.fingerprint,
            "key": {"data": self.key_data.tolist(), "impl": self.key_impl},
            "state_file": name, "state_sha256": hashlib.sha256(blob).hexdigest(),
            "num_leaves": len(leaves), "steps_done": int(_host(state.count)),
            "position": {**position._asdict(),
                         "diagnostics": {k: list(vals)
                                         for k, vals in position.diagnostics.items()}},
            "note": self.note}
    meta["position_sha256"] = _position_digest(meta)
    with atomic_write(self.meta_path, "w", file_mode=0o600) as f:
      json.dump(meta, f)
    if previous and previous != name:
      try:
        os.unlink(os.path.join(self.directory, previous))
      except OSError:
        pass


def _position_digest(meta: dict) -> str:
  """SHA-256 tying the loop position, steps done and key to the state file's checksum,
  so that an edited position cannot make a resumed run repeat (unaccounted) steps."""
  tied = {k: meta.get(k) for k in ("state_sha256", "steps_done", "position", "key",
                                    "fingerprint")}
  return hashlib.sha256(json.dumps(tied, sort_keys=True).encode("utf-8")).hexdigest()


def check_directory(directory) -> None:
  """Refuses a checkpoint directory that exists, holds no checkpoint and is not
  empty (it must be private: new, or empty and then made 0700), or whose
  parent folder is missing.

  Raises:
    JtwinInputError: a file, a missing parent, state files without their
      JSON, or a non-empty directory without a checkpoint.
  """
  directory = os.fspath(directory)
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise JtwinInputError(f"{directory}: is a file; give a new directory for the checkpoint")
  parent = os.path.dirname(os.path.abspath(directory))
  if not os.path.isdir(parent):
    raise JtwinInputError(f"{directory}: its parent folder '{parent}' does not exist; "
                          "create it first")
  if os.path.isdir(directory) and not os.path.isfile(os.path.join(directory, META)):
    names = os.listdir(directory)
    if any(n.startswith("state-") and n.endswith(".npz") for n in names):
      raise JtwinInputError(f"{directory}: holds checkpoint state files but no {META} "
                            "(damaged or interrupted while writing); remove the directory "
                            "to start afresh")
    if names:
      raise JtwinInputError(f"{directory}: is not empty; the checkpoint holds the run's "
                            "secret key and must have a private directory of its own: give "
                            "a new or empty directory")
    os.chmod(directory, 0o700)


def read_meta(directory) -> dict:
  """The checkpoint's JSON metadata ({} if there is none).

  Raises:
    JtwinInputError: the file exists but is not valid JSON.
  """
  path = os.path.join(os.fspath(directory), META)
  if not os.path.isfile(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise JtwinInputError(f"{path}: not a readable checkpoint ({e.__class__.__name__})") from None


def _make_private_dir(directory: str) -> None:
  if os.path.isdir(directory):
    return
  try:
    os.makedirs(directory, mode=0o700)
  except OSError as e:
    raise JtwinInputError(f"{directory}: cannot create the checkpoint directory: "
                          f"{e.strerror}") from None
  os.chmod(directory, 0o700)        # makedirs' mode is masked by the umask
