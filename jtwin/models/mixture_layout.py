"""The static layout of the automatic mixture: index maps, parameter shapes and
the flat categorical block (shared by `mixture` and `mixture_grads`, which
both import it, so neither imports the other's internals back)."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jtwin.models.interface import FAMILIES, Feature

Array = jax.Array


class MixtureLayout(NamedTuple):
  """Static (public) index maps of a mixture model; numpy arrays, hashable by id."""
  num_components: int
  num_features: int
  normal_idx: np.ndarray      # [Dn] column indices of Normal features
  poisson_idx: np.ndarray     # [Dp]
  cat_idx: np.ndarray         # [Dc] column indices of Categorical/Bernoulli features
  cat_sizes: np.ndarray       # [Dc] number of categories
  flat_feature: np.ndarray    # [Ct] categorical-block position of each flat category
  flat_value: np.ndarray      # [Ct] category code of each flat category
  flat_free: np.ndarray       # [Pc] flat positions that carry a free logit
  pad_index: np.ndarray       # [Dc, Cmax] flat position, or 0 where padding
  pad_valid: np.ndarray       # [Dc, Cmax] bool
  missing_idx: np.ndarray     # [Dm] column indices that may be missing


def make_layout(features: Sequence[Feature], num_components: int) -> MixtureLayout:
  """Builds the static index maps. Validates the feature list."""
  if num_components < 1:
    raise ValueError(f"num_components must be >= 1, got {num_components}")
  if not features:
    raise ValueError("a mixture model needs at least one feature")
  normal, poisson, cat, sizes, missing = [], [], [], [], []
  for d, f in enumerate(features):
    if f.family not in FAMILIES:
      raise ValueError(f"feature {f.name!r}: unknown family {f.family!r}")
    if f.family == "normal":
      normal.append(d)
    elif f.family == "poisson":
      poisson.append(d)
    else:
      c = 2 if f.family == "bernoulli" else int(f.num_categories)
      if f.family == "bernoulli" and f.num_categories not in (0, 2):
        raise ValueError(f"feature {f.name!r}: bernoulli has 2 categories")
      if c < 2:
        raise ValueError(f"feature {f.name!r}: a categorical needs >= 2 categories, got {c}")
      cat.append(d)
      sizes.append(c)
    if f.missing:
      missing.append(d)
  sizes_a = np.asarray(sizes, np.int32)
  # Flat layout: first every free category (feature by feature, categories
  # 0..C-2), then every feature's reference category C-1. The free logits are
  # then a prefix of the flat logits: no scatter or gather to map between them.
  free_feature = np.repeat(np.arange(len(sizes)), sizes_a - 1).astype(np.int32)
  free_offsets = np.concatenate([[0], np.cumsum(sizes_a - 1)]).astype(np.int32)
  free_value = (np.arange(free_offsets[-1]) - free_offsets[free_feature]).astype(np.int32)
  flat_feature = np.concatenate([free_feature, np.arange(len(sizes))]).astype(np.int32)
  flat_value = np.concatenate([free_value, sizes_a - 1]).astype(np.int32)
  pc = int(free_offsets[-1])
  flat_free = np.arange(pc, dtype=np.int32)
  cmax = int(sizes_a.max()) if len(sizes) else 1
  grid = np.arange(cmax)[None, :]
  pad_valid = grid < sizes_a[:, None] if len(sizes) else np.zeros((0, 1), bool)
  ref_pos = pc + np.arange(len(sizes))[:, None]
  pad_index = np.where(grid < sizes_a[:, None] - 1, free_offsets[:-1, None] + grid,
                       np.where(pad_valid, ref_pos, 0)).astype(np.int32)
  as_idx = lambda v: np.asarray(v, np.int32)
  return MixtureLayout(num_components, len(features), as_idx(normal), as_idx(poisson),
                       as_idx(cat), sizes_a, flat_feature, flat_value, flat_free,
                       pad_index, pad_valid, as_idx(missing))


def param_shapes(layout: MixtureLayout) -> dict:
  """Shapes of the unconstrained parameter dict."""
  k = layout.num_components
  shapes = {"mix": (k - 1,)}
  if len(layout.normal_idx):
    shapes["normal_loc"] = (k, len(layout.normal_idx))
    shapes["normal_log_scale"] = (k, len(layout.normal_idx))
  if len(layout.poisson_idx):
    shapes["poisson_log_rate"] = (k, len(layout.poisson_idx))
  if len(layout.cat_idx):
    shapes["cat_logits"] = (k, len(layout.flat_free))
  if len(layout.missing_idx):
    shapes["missing_logit"] = (k, len(layout.missing_idx))
  return shapes


# ------------------------------------------------------------ categorical block
def cat_full_logits(layout: MixtureLayout, free: Array) -> Array:
  """Free logits [..., Pc] -> all-category logits [..., Ct] (references = 0).

  The flat layout puts the free categories first, so this is a concatenation.
  """
  return jnp.concatenate([free, jnp.zeros(free.shape[:-1] + (len(layout.cat_idx),), free.dtype)], -1)


def cat_log_probs(layout: MixtureLayout, free: Array) -> Array:
  """Per-feature log-softmax in the flat layout: [..., Pc] -> [..., Ct]."""
  full = cat_full_logits(layout, free)
  padded = jnp.where(layout.pad_valid, full[..., layout.pad_index], -jnp.inf)
  lse = jax.nn.logsumexp(padded, axis=-1)                   # [..., Dc]
  return full - lse[..., layout.flat_feature]


def cat_onehot(layout: MixtureLayout, values: Array, observed: Array) -> Array:
  """[B, D] data -> [B, Ct] float one-hot of observed categorical cells."""
  codes = values[:, layout.cat_idx].astype(jnp.int32)[:, layout.flat_feature]
  obs = observed[:, layout.cat_idx][:, layout.flat_feature]
  return ((codes == layout.flat_value) & obs).astype(values.dtype)
