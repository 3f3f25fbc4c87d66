"""Exact per-example clipping for the mixture model without per-example gradients.

For ell_i = logsumexp_k(log pi_k + L_ik) the gradient w.r.t. component k's
parameters is r_ik * dL_ik/dtheta_k (r = responsibilities), and w.r.t. the
ALR weight logits it is r_i - pi. Every family's score is closed-form and
cheap (a categorical's is sparse: onehot - p), so each example's weighted
squared gradient norm sum_j w_j g_ij^2 is computed from [B, K] arrays, and the
clipped sum sum_i c_i g_i, c_i = min(1, C / ||g_i||), is one weighted sum
(matrix products with the weights a_ik = c_i r_ik). The result equals the
`vmap(grad)` reference exactly up to float rounding (tested).

Rows that are padding (mask False) or whose norm or log-likelihood is
non-finite get c_i = 0 and contribute exactly zero: every per-example factor
passes through `jnp.where`, so no 0 * inf = NaN can leak into the sum.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jtwin.models import families as fam
from jtwin.models.interface import ClipInfo
from jtwin.models.mixture_layout import MixtureLayout, cat_log_probs, cat_onehot, param_shapes


def _finite_or_zero(x):
  return jnp.where(jnp.isfinite(x), x, 0.0)


def _designs(layout: MixtureLayout, values, observed):
  """The batch's 0/1 design matrices of the categorical and missingness blocks.

  F_cat [B, Ct + Dc] = [one-hot of observed categories | observed categorical
  cell], F_miss [B, 2 Dm] = [observed | missing]. Each block's log-likelihood,
  squared score norms and weighted gradient sums are then products with F or
  F^T (None where a block is absent).
  """
  f_cat = f_miss = None
  if len(layout.cat_idx):
    f_cat = jnp.concatenate([cat_onehot(layout, values, observed),
                             observed[:, layout.cat_idx].astype(values.dtype)], 1)
  if len(layout.missing_idx):
    om = observed[:, layout.missing_idx].astype(values.dtype)
    f_miss = jnp.concatenate([om, 1.0 - om], 1)
  return f_cat, f_miss


def clipped_grad_sum(layout: MixtureLayout, theta: dict, coord_weights: dict,
                     values: jax.Array, observed: jax.Array, mask: jax.Array,
                     clip: float, *, return_norms: bool = False, group_clip: bool = False):
  """Sum over the batch of per-example gradients clipped to L2 norm `clip`.

  Args:
    layout: the mixture layout.
    theta: unconstrained parameters (dict, see `jtwin.models.mixture`).
    coord_weights: like theta; the norm of example i is
      sqrt(sum_j w_j (d ell_i / d theta_j)^2) (w = 1 + (d scale)^2 for the
      variational parameters, see `posterior.reparam_weights`; all ones for
      the norm w.r.t. theta).
    values, observed: a batch [B, D] (float32, bool).
    mask: bool [B]; False rows are padding and contribute exactly zero.
    clip: the clipping threshold C (> 0; `jnp.inf` disables clipping).
    return_norms: also return the per-example (unclipped, global) norms [B].
    group_clip: scale each parameter group g by 1 / s_g (`group_unscale`)
      and clip it to its share C_g of `clip` (`group_budgets`) instead of
      clipping the whole gradient to `clip`; the per-example contribution's
      global norm is <= clip either way. The returned sum is then in scaled
      coordinates: multiplying it (after the DP noise) by `grad_unscale`
      gives the gradient estimate (public post-processing).

  Returns:
    (grad_sum, ClipInfo) where grad_sum is shaped like theta: sum_i c_i g_i
    with g_i = d ell_i / d theta. (The variational-parameter gradient follows
    by the elementwise chain rule, see `posterior.reparam_weights`.)
  """
  dtype = values.dtype
  k = layout.num_components
  b = values.shape[0]
  # Padding rows become all-missing zeros, and so do non-finite cells (such a
  # row is then dropped below): no 0 * inf can reach the sums.
  cell_ok = jnp.isfinite(values)
  row_ok = jnp.all(cell_ok | ~observed, axis=1)
  keep = (mask & row_ok)[:, None]
  values = jnp.where(keep & cell_ok, values, 0.0)
  observed = observed & keep
  log_pi = fam.categorical_log_probs(theta["mix"])            # [K]
  pi = jnp.exp(log_pi)
  comp = jnp.zeros((b, k), dtype)                             # L_ik
  zeros_bk = jnp.zeros((b, k), dtype)
  n2_cat, n2_miss = zeros_bk, zeros_bk                        # weighted |dL_ik/dtheta_k|^2 per block
  if len(layout.normal_idx):
    o = observed[:, layout.normal_idx][:, None, :]
    x = jnp.where(o, values[:, layout.normal_idx][:, None, :], 0.0)
    log_s = theta["normal_log_scale"]
    inv_s = jnp.exp(-log_s)
    z = (x - theta["normal_loc"]) * inv_s                     # [B, K, Dn]
    comp += jnp.sum(jnp.where(o, -0.5 * z * z - log_s - fam._HALF_LOG_2PI, 0.0), -1)
    d_loc = jnp.where(o, z * inv_s, 0.0)
    d_ls = jnp.where(o, z * z - 1.0, 0.0)
    n2_normal = (coord_weights["normal_loc"] * d_loc**2
                 + coord_weights["normal_log_scale"] * d_ls**2)   # [B, K, Dn]
  if len(layout.poisson_idx):
    o = observed[:, layout.poisson_idx]
    x = jnp.where(o, values[:, layout.poisson_idx], 0.0)
    eta = theta["poisson_log_rate"]
    rate = jnp.exp(eta)                                       # [K, Dp]
    lp = fam.poisson_log_prob(x[:, None, :], eta)
    comp += jnp.sum(jnp.where(o[:, None, :], lp, 0.0), -1)
    d_eta = jnp.where(o[:, None, :], x[:, None, :] - rate, 0.0)
    n2_pois = coord_weights["poisson_log_rate"] * d_eta**2    # [B, K, Dp]
  f_cat, f_miss = _designs(layout, values, observed)
  if f_cat is not None:
    ct, dc = len(layout.flat_feature), len(layout.cat_idx)
    logp = cat_log_probs(layout, theta["cat_logits"])         # [K, Ct]
    p = jnp.exp(logp)
    w = jnp.concatenate([coord_weights["cat_logits"], jnp.zeros((k, dc), dtype)], 1)
    seg = jax.nn.one_hot(layout.flat_feature, dc, dtype=dtype)
    # sum_c w_c (1[x=c] - p_c)^2 = sum_c w_c p_c^2 + w_x (1 - 2 p_x)
    fwd = jnp.concatenate([logp, jnp.zeros((k, dc), dtype)], 1)
    nrm = jnp.concatenate([w * (1.0 - 2.0 * p), (w * p * p) @ seg], 1)
    both = f_cat @ jnp.concatenate([fwd, nrm], 0).T          # [B, 2K]
    comp += both[:, :k]
    n2_cat = both[:, k:]
  if f_miss is not None:
    zeta = theta["missing_logit"]
    q = jax.nn.sigmoid(zeta)
    wz = coord_weights["missing_logit"]
    fwd = jnp.concatenate([-jax.nn.softplus(zeta), -jax.nn.softplus(-zeta)], 1)
    nrm = jnp.concatenate([wz * q * q, wz * (1.0 - q) ** 2], 1)
    both = f_miss @ jnp.concatenate([fwd, nrm], 0).T         # [B, 2K]
    comp += both[:, :k]
    n2_miss = both[:, k:]
  joint = log_pi + comp
  ell = jax.nn.logsumexp(joint, axis=-1)                     # [B]
  resp = jnp.exp(joint - ell[:, None])                        # [B, K]
  r2 = resp * resp
  # A component with zero responsibility contributes nothing, even if its score overflows.
  wsum = lambda n2: jnp.sum(jnp.where(resp > 0, r2 * n2, 0.0), -1)
  wsum3 = lambda n2: jnp.sum(jnp.where((resp > 0)[:, :, None], r2[:, :, None] * n2, 0.0), 1)
  g_mix = resp[:, : k - 1] - pi[: k - 1]                      # [B, K-1]
  # Squared norms of each clipping group, [B, G]: mix | normal cols | poisson cols | cat | missing.
  group_n2 = [jnp.sum(coord_weights["mix"] * g_mix**2, -1)[:, None]]
  if len(layout.normal_idx):
    group_n2.append(wsum3(n2_normal))
  if len(layout.poisson_idx):
    group_n2.append(wsum3(n2_pois))
  group_n2 += [wsum(n2_cat)[:, None], wsum(n2_miss)[:, None]]
  group_n2 = jnp.concatenate(group_n2, 1)
  norm = jnp.sqrt(jnp.maximum(jnp.sum(group_n2, 1), 0.0))   # the per-example global norm

  finite = jnp.isfinite(norm) & jnp.isfinite(ell) & row_ok
  use = mask & finite
  # A relative margin of 2^-16 absorbs float rounding between the norm and the sum.
  margin = 1.0 - 2.0**-16
  if group_clip:
    # Group g's gradient is pre-scaled by 1 / s_g (`grad_unscale`) and clipped
    # to its share C_g: the contribution is min(1 / s_g, C_g / |g|) g.
    budgets = clip * margin * jnp.asarray(group_budgets(layout), dtype)      # [G]
    inv_s = 1.0 / _group_unscale(layout, clip, jnp).astype(dtype)           # [G]
    gnorm = jnp.sqrt(jnp.maximum(group_n2, 0.0))
    over = gnorm * inv_s > budgets
    factors = jnp.where(over, budgets / jnp.where(gnorm > 0, gnorm, 1.0), inv_s)
    clipped = jnp.any(over, 1)
  else:
    target = clip * margin
    factor = jnp.where(norm > target, target / jnp.where(norm > 0, norm, 1.0), 1.0)
    factors = jnp.broadcast_to(factor[:, None], group_n2.shape)
    clipped = norm > target
  c = jnp.where(use[:, None], factors, 0.0)                   # [B, G]
  resp0 = jnp.where(use[:, None], _finite_or_zero(resp), 0.0)
  col = 1
  # ---- weighted sums sum_i sum_k c_ig r_ik dL_ik/dtheta_k, group by group.
  grads = {"mix": jnp.sum(c[:, :1] * resp0[:, : k - 1], 0) - pi[: k - 1] * jnp.sum(c[:, 0])}
  if len(layout.normal_idx):
    dn = len(layout.normal_idx)
    a3 = c[:, None, col:col + dn] * resp0[:, :, None]         # [B, K, Dn]
    col += dn
    grads["normal_loc"] = jnp.sum(a3 * _finite_or_zero(d_loc), 0)
    grads["normal_log_scale"] = jnp.sum(a3 * _finite_or_zero(d_ls), 0)
  if len(layout.poisson_idx):
    dp_ = len(layout.poisson_idx)
    a3 = c[:, None, col:col + dp_] * resp0[:, :, None]        # [B, K, Dp]
    col += dp_
    o = observed[:, layout.poisson_idx].astype(dtype)
    grads["poisson_log_rate"] = (jnp.einsum("bkd,bd->kd", a3, o * x)
                                 - rate * jnp.einsum("bkd,bd->kd", a3, o))
  a_cat, a_miss = c[:, col:col + 1] * resp0, c[:, col + 1:col + 2] * resp0
  if f_cat is not None:
    ad = a_cat.T @ f_cat                                      # [K, Ct + Dc]
    pc = len(layout.flat_free)     # free categories come first in the flat layout
    grads["cat_logits"] = ad[:, :pc] - p[:, :pc] * (ad[:, ct:] @ seg[:pc].T)
  if f_miss is not None:
    dm = len(layout.missing_idx)
    a_missing = a_miss.T @ f_miss[:, dm:]                     # sum_i a_ik (1 - o_id)
    grads["missing_logit"] = a_missing - q * jnp.sum(a_miss, 0)[:, None]

  info = ClipInfo(num_clipped=jnp.sum(use & clipped),
                  num_nonfinite=jnp.sum(mask & ~finite),
                  log_lik_sum=jnp.sum(jnp.where(use, ell, 0.0)))
  if return_norms:
    return grads, info, norm
  return grads, info


def group_budgets(layout: MixtureLayout) -> np.ndarray:
  """Per-group share of the clipping norm: C_g = C * sqrt(w_g / sum w), so
  sqrt(sum_g C_g^2) = C.

  Groups, in order: the mixture weights (w = 1), each Normal column (1 each),
  each Poisson column (1 each), all categorical/Bernoulli columns together
  (w = their number; their scores are bounded), all missingness indicators
  together (w = their number). Clipping each group to its share bounds the
  whole per-example gradient by C, as global clipping does, but an outlier in
  one numeric column can no longer shrink every other column's signal to
  nothing (which is what makes twinify learn nothing on raw Adult).
  """
  w = ([1.0] + [1.0] * len(layout.normal_idx) + [1.0] * len(layout.poisson_idx)
       + [float(len(layout.cat_idx)), float(len(layout.missing_idx))])
  w = np.asarray(w)
  return np.sqrt(w / w.sum())


def score_bounds(layout: MixtureLayout) -> np.ndarray:
  """Largest possible per-example gradient norm of each group (inf: unbounded).

  With responsibilities r (sum_k r_k^2 <= 1): the weights' score r - pi has
  norm <= sqrt(2); each categorical column's r_k (onehot - p) has norm
  <= sqrt(2), so the block's is <= sqrt(2 D_cat); each missingness
  indicator's r_k (1[missing] - q) has norm <= 1, so the block's is
  <= sqrt(D_miss). Normal and Poisson scores are unbounded. (Norms w.r.t.
  theta with unit coordinate weights, as `jtwin.infer` uses.)
  """
  inf = [np.inf] * (len(layout.normal_idx) + len(layout.poisson_idx))
  return np.asarray([np.sqrt(2.0)] + inf + [np.sqrt(2.0 * len(layout.cat_idx)),
                                            np.sqrt(float(len(layout.missing_idx)))])


def group_unscale(layout: MixtureLayout, clip: float) -> np.ndarray:
  """Per-group factors s_g >= 1: a group's gradient is clipped to C_g after
  division by s_g, i.e. at threshold tau_g = s_g C_g in parameter units.

  s = max(1, sqrt(2) / C_mix) for the mixture weights, 1 for every other group.
  The weights' score r_i - pi is bounded by sqrt(2) (`score_bounds`), so with
  this scaling it is never clipped; at its share C_mix of `clip` (about 0.23
  with 14 numeric columns) it was clipped for most examples, and that is what
  made DP-VI collapse onto one component: the score of an example of a large
  component is small and passed unclipped, while an example of a small
  component was clipped, so large components grew at the expense of small
  ones. Measured on a 14-numeric-column table at epsilon = 1 (and at epsilon =
  500, so it is the clipping, not the noise): 1.2 effective components of 50,
  so every Normal and Poisson column had the spread of one component (sd
  ratios 0.53 to 0.91). The price is a noise std s_mix times larger on the
  K - 1 weight logits, relative to their unclipped signal.

  Only the weights are rescaled. The categorical block's bound sqrt(2 D_cat)
  is far above its typical norm: rescaling it to its bound would multiply the
  noise on every category logit by about 6 on Adult, and on the 14-column
  table it changed the synthetic sd ratios by at most 0.07.
  """
  return _group_unscale(layout, float(clip), np)


def _group_unscale(layout: MixtureLayout, clip, xnp):
  """`group_unscale` with numpy (public constants) or jax.numpy (traced clip)."""
  share = group_budgets(layout)
  s_mix = xnp.maximum(1.0, score_bounds(layout)[0] / (clip * share[0]))   # inf clip -> 1
  return xnp.concatenate([xnp.reshape(s_mix, (1,)), xnp.ones(len(share) - 1)])


def grad_unscale(layout: MixtureLayout, clip: float, group_clip: bool = True) -> dict:
  """`group_unscale` per coordinate, shaped like theta (all ones without group clipping).

  `clipped_grad_sum(..., group_clip=True)` returns sum_i clip_C(g_i / s), whose
  sensitivity is C; `jtwin.fit` adds the DP noise N(0, (sigma C)^2 I) to it and
  then multiplies by s. The multiplication is post-processing with a public
  constant, so the guarantee is that of the sensitivity-C Gaussian mechanism.
  """
  shapes = param_shapes(layout)
  out = {nm: np.ones(sh, np.float32) for nm, sh in shapes.items()}
  if group_clip:
    out["mix"] = np.full(shapes["mix"], group_unscale(layout, clip)[0], np.float32)
  return out
