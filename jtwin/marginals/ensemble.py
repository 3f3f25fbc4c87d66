"""Several mixtures fitted to the same noisy marginals, joined into one mixture.

The noisy 1- and 2-way tables leave a K-component mixture's higher-order
structure undetermined: fits from different starting points agree on the
measured tables but not on, say, a 3-way interaction, and each also fits a
different part of the noise. Averaging M such fits (sampling each row from
one of them, chosen uniformly) averages those arbitrary parts away: on Adult
at epsilon = 1 (seeds 0 / 1), four fits of 50 components gave 3-way TVD
0.076 / 0.076 against 0.084 / 0.085 for one fit of 200, at the same cost;
three of 67: 0.078 / 0.077; eight of 25: 0.079 / 0.078 (all 455 triples:
`python benchmarks/ablate_napsumq.py --delta 1e-5 --all_triples --seed S
--options "ensemble=M, num_components=K"`; median of 5 seeds over the
scorer's 200 triples: 0.078 -> 0.073, benchmarks/README.md §6).

The average of M mixtures with weights pi_m / M is itself a mixture of
M * K components, so the result is an ordinary jtwin mixture posterior and
everything downstream (sampler, result files, `jtwin sample`) is unchanged.
Post-processing of the noisy measurements: it costs no privacy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jtwin.models.posterior import MeanFieldParams, raw_scale_for

__all__ = ["join_mixtures"]


def _log_softmax_ref(a: np.ndarray) -> np.ndarray:
  """log p for p = softmax([a, 0]) (numpy, float64): [K-1] -> [K]."""
  full = np.concatenate([np.asarray(a, np.float64), [0.0]])
  m = full.max()
  return full - (m + np.log(np.exp(full - m).sum()))


def _softplus(x: np.ndarray) -> np.ndarray:
  return np.logaddexp(0.0, np.asarray(x, np.float64))


def join_mixtures(members: Sequence[MeanFieldParams]) -> MeanFieldParams:
  """One mixture posterior from M mixture posteriors of equal shape.

  Components are concatenated member by member ("cat_logits" and
  "missing_logit" [K, ...] -> [M * K, ...], locations and scales as they
  are). The weights are pi_m / M: the joined "mix" logits (softmax
  reference: the last component of the last member) are exact at the
  posterior locations. Their scales are each member's own, and a member's
  reference component, which had no logit of its own, gets the mean scale
  of that member's logits: the joined posterior over the weights is an
  approximation (a mean-field posterior cannot carry the members'
  dependence), the one over every component's cells is exact.

  Args:
    members: M `MeanFieldParams` whose loc / raw_scale are dicts of arrays
      ("mix" [K - 1], "cat_logits" [K, P], optional "missing_logit" [K, Dm]).

  Returns:
    `MeanFieldParams` of dicts of float32 numpy arrays over M * K components.
  """
  members = list(members)
  if len(members) == 1:
    return members[0]
  m = len(members)
  log_pi = np.concatenate([_log_softmax_ref(p.loc["mix"]) for p in members]) - np.log(m)
  mix_loc = log_pi[:-1] - log_pi[-1]
  scales = []
  for i, p in enumerate(members):
    s = _softplus(p.raw_scale["mix"])
    ref = [raw_scale_for(float(s.mean()))] if (i < m - 1 and s.size) else (
        [raw_scale_for(0.01)] if i < m - 1 else [])
    scales.append(np.concatenate([np.asarray(p.raw_scale["mix"], np.float64), ref]))
  loc = {"mix": mix_loc}
  raw = {"mix": np.concatenate(scales)}
  for name in members[0].loc:
    if name == "mix":
      continue
    loc[name] = np.concatenate([np.asarray(p.loc[name]) for p in members], axis=0)
    raw[name] = np.concatenate([np.asarray(p.raw_scale[name]) for p in members], axis=0)
  f32 = lambda d: {k: np.asarray(v, np.float32) for k, v in d.items()}
  return MeanFieldParams(f32(loc), f32(raw))


def member_posterior(joined: MeanFieldParams, num_members: int, r: int) -> MeanFieldParams:
  """Member r's own posterior, recovered exactly from the joined one.

  Within a member, differences of the joined "mix" logits are the member's
  own (the 1 / M cancels); its reference component's scale (made up by
  `join_mixtures`) is dropped.
  """
  k = np.asarray(joined.loc["cat_logits"]).shape[0]
  per = k // num_members
  comps = slice(r * per, (r + 1) * per)
  full = np.concatenate([np.asarray(joined.loc["mix"], np.float64), [0.0]])[comps]
  raw_full = np.concatenate([np.asarray(joined.raw_scale["mix"], np.float64), [0.0]])[comps]
  loc, raw = {"mix": full[:-1] - full[-1]}, {"mix": raw_full[:-1]}
  for name in joined.loc:
    if name != "mix":
      loc[name] = np.asarray(joined.loc[name])[comps]
      raw[name] = np.asarray(joined.raw_scale[name])[comps]
  f32 = lambda d: {k_: np.asarray(v, np.float32) for k_, v in d.items()}
  return MeanFieldParams(f32(loc), f32(raw))


def sample_by_member(key, features, joined: MeanFieldParams, num_members: int, num_rows: int,
                     records_per_draw: int):
  """Rows from the ensemble's posterior predictive, one member per parameter draw.

  The ensemble is a mixture of its members' posteriors (as an ensemble of
  MAP fits approximates a multimodal posterior): each draw of parameters
  picks a member uniformly, then draws from that member's posterior. With
  one row per draw this is the joined mixture's predictive; with
  `records_per_draw` = m > 1 (twinify's --m, for Rubin's rules) each
  synthetic data set then carries the spread between the members, which
  the joined mixture's draws average away.

  Returns:
    numpy (values float32 [num_rows, D], observed bool [num_rows, D]);
    rows of one draw are consecutive.
  """
  import jax
  from jtwin.models import make_mixture_model
  from jtwin.sampling import sample_synthetic
  m = int(records_per_draw)
  num_draws = -(-int(num_rows) // m)
  k_pick, k_rows = jax.random.split(key)
  pick = np.asarray(jax.random.randint(k_pick, (num_draws,), 0, num_members))
  k = np.asarray(joined.loc["cat_logits"]).shape[0]
  model = make_mixture_model(features, k // num_members)
  d = len(features)
  values = np.zeros((num_draws, m, d), np.float32)
  observed = np.zeros((num_draws, m, d), bool)
  for r, kr in enumerate(jax.random.split(k_rows, num_members)):
    draws = np.flatnonzero(pick == r)
    if not len(draws):
      continue
    post = member_posterior(joined, num_members, r)
    post = MeanFieldParams(*[{n: jax.numpy.asarray(v) for n, v in part.items()} for part in post])
    v, o = sample_synthetic(kr, model, post, len(draws) * m, records_per_draw=m)
    values[draws], observed[draws] = v.reshape(len(draws), m, d), o.reshape(len(draws), m, d)
  return values.reshape(-1, d)[:num_rows], observed.reshape(-1, d)[:num_rows]


SAMPLINGS = ("iid", "balanced")


def resolve_sampling(sampling, records_per_draw: int, *, marginal: bool = True,
                     flag: str = "sampling", m_flag: str = "records_per_draw") -> str:
  """The sampler to use, checked: by default "balanced" for a marginal-method
  result drawn one row per posterior draw, else "iid" (twinify's sampler).

  Raises:
    JtwinInputError: an unknown `sampling`, or "balanced" with
      `records_per_draw` > 1 (the message names `flag` and `m_flag`).
  """
  from jtwin.errors import JtwinInputError
  if sampling is None:
    return "balanced" if marginal and records_per_draw == 1 else "iid"
  if sampling not in SAMPLINGS:
    raise JtwinInputError(f"{flag} must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
  if sampling == "balanced" and records_per_draw > 1:
    raise JtwinInputError(f"{flag} balanced draws every row from the posterior mean: it "
                          f"cannot be combined with {m_flag} > 1; use {flag} iid (Rubin's "
                          "rules assume i.i.d. rows)")
  return sampling


def sample_posterior(key, model, posterior, num_rows: int, *, records_per_draw: int = 1,
                     members: int = 1, sampling: str = "iid", coarse=None):
  """The posterior predictive of a (possibly joined) mixture: every sampling path.

  sampling "iid": `jtwin.sampling.sample_synthetic` (a fresh posterior draw
  per row, or per `records_per_draw` rows), except that for an ensemble
  (`members` > 1) with `records_per_draw` > 1 each draw comes from one
  member (`sample_by_member`). "balanced": `jtwin.marginals.balanced`, the
  mixture at the posterior mean with systematically rounded counts (one
  row per draw only; categorical columns only). Used by
  `jtwin.sample_marginals`, `jtwin sample` and `jtwin.Synthesizer.sample`,
  so all three agree; each passes `coarse`, the columns' coarse-cell maps
  (`jtwin.marginals.cells.coarse_maps`), which the balanced sampler's swaps
  use for the triple tables.

  Raises:
    JtwinInputError (a ValueError): an unknown `sampling`, or "balanced"
      with `records_per_draw` > 1 (`resolve_sampling`) or a model with
      non-categorical columns.
  """
  from jtwin.sampling import sample_synthetic
  if resolve_sampling(sampling, records_per_draw) == "balanced":
    if model.features is None or "mix" not in posterior.loc:
      from jtwin.errors import JtwinInputError
      raise JtwinInputError("balanced sampling needs jtwin's mixture of categorical columns "
                            "(this is a custom model): use --sampling iid (sampling='iid')")
    from jtwin._rng import numpy_generator
    from jtwin.marginals.balanced import sample_balanced
    k = np.asarray(posterior.loc["mix"]).shape[0] + 1
    return sample_balanced(numpy_generator(key), model.features, k, posterior, num_rows,
                           coarse=coarse)
  if records_per_draw > 1 and members > 1:
    return sample_by_member(key, model.features, posterior, members, num_rows,
                            records_per_draw)
  return sample_synthetic(key, model, posterior, num_rows, records_per_draw=records_per_draw)
