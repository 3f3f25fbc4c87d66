"""Marginal-query inference: a noise-aware mixture fitted to DP marginals.

twinify 2.0's second method (`twinify napsumq`, Raisa et al. 2023) fits a
model to noisy marginal queries and keeps a posterior over its parameters
that accounts for the noise. jtwin does the same with its own mixture as the
model, which scales to many columns:

  1. **Cells.** Every column becomes a few cells (`jtwin.marginals.cells`).
  2. **Measure 1-way.** All 1-way tables, with Gaussian noise; cells whose
     noisy count is below `compress_sigmas` noise sds are merged (MST's
     domain compression).
  3. **Select and measure** (`selection`):
     * "aim" (default): AIM's loop. Each round picks the clique the current
       model answers worst (exponential mechanism over every 2-way clique,
       plus every 3-way clique containing `target`), measures it with
       Gaussian noise and refits; when a measurement changes the model less
       than its noise, the noise is halved (budget annealing); the loop ends
       exactly when the budget is spent.
     * "mst": MST's maximum spanning tree of 2-way cliques.
     * "all": every 2-way clique (and 3-way with `target`), one measurement each.
     * "none": only the cliques in `queries` (a twinify NAPSU-MQ query file).
     Cliques in `queries` are always measured, after the 1-way tables.
  4. **Generate.** A K-component mixture of per-column categoricals is fitted
     to all the noisy tables by its closed-form marginals (MAP, then a
     mean-field posterior: the measurement noise is known, so the likelihood
     is explicit), and sampled with jtwin's posterior-predictive sampler.

Privacy. Only steps 2 and 3 read the data; every release there is a Gaussian
measurement (rho = 1/(2 sigma^2) per table of sensitivity 1) or an
exponential-mechanism selection (rho = eps0^2 / 8). The rhos add up. With
selection "all" or "none" every release is a Gaussian mechanism, and their
composition is exactly one Gaussian mechanism with mu^2 = 2 rho (mu-GDP), so
the total is converted with the exact analytic-Gaussian curve
(`jtwin.accounting.gaussian.composed_epsilon`: 16% more rho than zCDP allows
at epsilon = 1); with "aim" or "mst" with the tight zCDP conversion
(`jtwin.accounting.zcdp`). The budget is spent once (twinify's NAPSU-MQ with
automatic selection spends it twice). K, the fit and the sampling are
post-processing and cost nothing. The number of rows is not released: the
fit uses n estimated from the noisy 1-way tables.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, NamedTuple, Optional, Sequence

import jax
import numpy as np

from jtwin._rng import numpy_generator, root_key
from jtwin.errors import JtwinInputError, NonFiniteError
from jtwin.marginals import cells as cl
from jtwin.marginals import ensemble as ens
from jtwin.marginals import fit as mfit
from jtwin.marginals import histogram
from jtwin.marginals import mixture_marginals as mm
from jtwin.marginals import residual as rs
from jtwin.marginals import run_decoding
from jtwin.marginals import select as sel
from jtwin.marginals import streamed
from jtwin.marginals.streamed import CsvSource
from jtwin.marginals.measure import Measurement, gaussian_measure, make_counter, table_size

__all__ = ["MarginalPrivacyRecord", "MarginalResult", "fit_marginals", "sample_marginals"]

SELECTIONS = ("aim", "mst", "all", "none")
MAX_TOTAL_CELLS = 20_000
SMOOTHNESS = 100.0   # the fit's roughness penalty (`mixture_marginals.roughness`)
RESIDUALS = True      # centred multi-way tables with selection "all" (`jtwin.marginals.residual`)
ONE_WAY_SMOOTHING = 10.0   # numeric 1-way histograms' smooth fit (`jtwin.marginals.histogram`)
DERIVED_SHARE = 4   # a determined column's table gets the budget of this many 1-way tables
# A column whose categories the DP domain step releases: this share of its 1-way table's
# budget moves to that step's label counts (a lower threshold, so fewer labels are lost
# to "(other)"), which the 1-way table then reuses (`_with_label_counts`)
CATEGORY_TRANSFER = 0.75
MIN_MEMBER_COMPONENTS = 50   # an ensemble member's fewest components (8 x 25 was worse than 4 x 50)
_GDP_ACCOUNTANT = ("Gaussian mechanisms composed exactly (mu-GDP, Dong, Roth & Su 2022; "
                   "analytic Gaussian conversion, Balle & Wang 2018)")
_SAMPLE_TAG = 0x73616d70   # "samp"
_RELEASE_TAG = 0x646F6D     # "dom": the row count and domain step's key


class MarginalPrivacyRecord(NamedTuple):
  """What the marginal method spent, certified for the code that ran.

  Attributes:
    mode: "calibrated" or "non-private".
    epsilon: certified upper bound on epsilon (exact Gaussian composition, or
      zCDP when exponential-mechanism selections ran; see `accountant`).
    epsilon_target: the requested epsilon.
    delta: delta.
    rho: total budget actually spent, as rho = sum of sensitivity^2 / (2
      sigma^2) (+ eps0^2 / 8 per selection): the sum of the parts below, the
      DP domain's histograms included.
    rho_one_way: spent on the 1-way tables.
    rho_queries: spent on the cliques forced by a query file.
    rho_selection: spent on exponential-mechanism selections.
    rho_measurement: spent on measuring selected cliques.
    num_measurements: number of noisy tables released (1-way included).
    num_selections: number of exponential-mechanism selections.
    accountant: how epsilon was obtained.
    rho_domain: spent on the DP domain's histograms (`jtwin.dp_domain`).
    relation: the neighbouring relation.
  """
  mode: str
  epsilon: float
  epsilon_target: Optional[float]
  delta: float
  rho: float
  rho_one_way: float
  rho_queries: float
  rho_selection: float
  rho_measurement: float
  num_measurements: int
  num_selections: int
  accountant: str = "zCDP, tight conversion (Canonne, Kamath & Steinke 2020)"
  relation: str = "add/remove one row"
  rho_domain: float = 0.0


class MarginalResult(NamedTuple):
  """Result of `fit_marginals`.

  Attributes:
    posterior: `MeanFieldParams` over the mixture's parameters (dicts of
      numpy arrays: "mix", "cat_logits", "missing_logit").
    cells: the columns' cells (tuple of `jtwin.marginals.cells.CellColumn`).
    privacy: the `MarginalPrivacyRecord`.
    measurements: [(column names, number of cells, noise sd, L2 sensitivity)]
      per released table, in the order measured (public); the sensitivity is
      below 1 for centred tables (`residuals`).
    num_rows_estimate: n estimated from the noisy 1-way tables (DP).
    model: the `jtwin.models.Model` to sample from (mixture over the cells).
    num_components: K.
    inferred_from_data: items taken from the private data without noise.
    timings: seconds per phase.
    public: the `jtwin.dp_domain.PublicPlan` (DP row count and domain; its
      `frame`, the private rows, is None here).
    ensemble: the number of mixtures joined into `posterior` (members are
      consecutive blocks of K / ensemble components).
    derived: the `jtwin.marginals.derived.DerivedColumn`s: columns declared
      `determined_by` another, decoded from it rather than modelled.
    smoothed: names of the columns whose noisy 1-way counts were replaced by
      their smooth fit (`one_way_smoothing`).
    run_smoothed: names of the columns with a merged numeric cell whose rows
      are spread over its base cells partly by a smooth fit to their noisy
      counts rather than by the clipped counts alone
      (`jtwin.marginals.run_decoding`).
    plot_rows: with a `CsvSource`, at most 50,000 evenly spaced raw rows of
      the data (PRIVATE: for the data holder's plots; never saved), else None.
  """
  posterior: Any
  cells: tuple
  privacy: MarginalPrivacyRecord
  measurements: list
  num_rows_estimate: float
  model: Any
  num_components: int
  inferred_from_data: list
  timings: dict
  public: Any = None
  ensemble: int = 1
  derived: tuple = ()
  smoothed: tuple = ()
  plot_rows: Any = None
  run_smoothed: tuple = ()


def _weighted_total(measurements) -> float:
  """n from the 1-way tables: inverse-variance weighted mean of their sums."""
  sums = np.array([m.noisy.sum() for m in measurements])
  var = np.array([m.variance.sum() for m in measurements])
  return float(np.sum(sums / var) / np.sum(1.0 / var))


class _Budget:
  """Adds up rho by purpose (host-side bookkeeping of what was released)."""

  def __init__(self):
    self.parts = {"one_way": 0.0, "queries": 0.0, "selection": 0.0, "measurement": 0.0}
    self.tables = 0
    self.selections = 0

  def measure(self, part, sigma, sensitivity=1.0):
    self.parts[part] += sensitivity**2 / (2.0 * sigma**2) if sigma > 0 else math.inf
    self.tables += 1

  def select(self, epsilon0):
    self.parts["selection"] += epsilon0**2 / 8.0
    self.selections += 1


def fit_marginals(key: jax.Array, frame, spec, **options) -> MarginalResult:
  if isinstance(frame, CsvSource):
    with streamed.work_directory(frame.workdir) as workdir:
      return _fit_marginals(key, frame, spec, _workdir=workdir, **options)
  return _fit_marginals(key, frame, spec, **options)


def _fit_marginals(key: jax.Array, frame, spec, *, epsilon: float = 1.0,
                  delta: Optional[float] = None, num_components: int = 400,
                  selection: str = "all", target: Optional[str] = None,
                  queries: Sequence[Sequence[str]] = (), non_private: bool = False,
                  one_way_fraction: float = 0.4, rounds: Optional[int] = None,
                  compress_sigmas: float = 3.0, max_cells: int = 1 << 20,
                  prior_concentration: float = 0.1, round_steps: int = 100,
                  final_steps: int = 2000, posterior_steps: int = 300,
                  learning_rate: float = 0.1, init_spread: float = 0.2, init_peak: float = 3.0,
                  max_value_cells: int = cl.MAX_VALUE_CELLS, num_bins: int = cl.NUM_BINS,
                  split_bins: int = cl.SPLIT_BINS, coarse_views: bool = True,
                  domain: str = "dp", domain_epsilon: Optional[float] = None,
                  check_delta=None, source: str = "data",
                  progress=None, devices: int = 1, max_coarse: Optional[int] = None,
                  ensemble: int = 8, smoothness: float = SMOOTHNESS,
                  residuals: bool = RESIDUALS,
                  one_way_smoothing: float = ONE_WAY_SMOOTHING,
                  multires: float = 0.0, multires_cells: int = 4, multires_order: int = 3,
                  _workdir: Optional[str] = None) -> MarginalResult:
  """Fits the noise-aware mixture to DP marginals of `frame`.

  Args:
    key: PRNG key or an int seed (split per purpose: measurement noise,
      selection, initialisation, posterior). A known seed lets anyone
      recompute the noise: keep it secret.
    frame: pandas DataFrame with (at least) the modelled columns, or a
      `CsvSource` (data larger than memory): the file is read in chunks,
      twice (the DP domain's counts, then the rows' cell codes into
      memory-mapped files in a private temporary directory, removed at the
      end; `jtwin.marginals.streamed`). Same release and fit as the whole
      file in memory for the same key. It needs a model file that leaves
      nothing to read off the data (`domain="dp"`, the default, releases
      what is undeclared).
    spec: `jtwin.spec.ModelSpec`, or the path of a model file.
    epsilon, delta: the run's total budget, row count and domain step included;
      delta defaults to 0.1 / N-hat, N-hat the DP row count.
    num_components: K, rounded up to a multiple of the ensemble's size
      (post-processing: costs no privacy).
    selection: "aim", "mst", "all" or "none" (see the module docstring).
    target: a column name: 3-way cliques containing it join the workload.
    queries: cliques (lists of column names) always measured, each once
      (in any order of its columns); a one-column clique is its 1-way table,
      which is measured anyway, so it adds nothing.
    non_private: measure without noise and select by argmax (NOT private).
    one_way_fraction: share of rho spent on the 1-way tables.
    rounds: AIM's initial number of rounds (default 16 * columns), which sets
      the first rounds' noise; annealing makes the actual number smaller.
    compress_sigmas: cells with a noisy count below this many noise sds are merged.
    max_cells: largest table measured (cells).
    prior_concentration: Dirichlet concentration of each component's cells.
    one_way_smoothing: weight of the robust smoothness penalty of the smooth
      fit to the noisy 1-way histogram of each integer column with (mostly)
      one cell per value and at least 16 cells (`jtwin.marginals.histogram`),
      which replaces the noisy counts when it explains them within their
      noise (chi^2 <= 3 per cell; columns with spikes keep their noisy
      counts); 0 turns it off. The same fit, with spikes above 3 sds kept,
      also decodes merged numeric cells (spreads their rows over their base
      cells): blended with the clipped noisy counts in the proportion that
      minimises Stein's unbiased risk estimate of the counts' squared error
      (`jtwin.marginals.run_decoding`; `MarginalResult.run_smoothed`).
      Post-processing. Measured at epsilon = 1 (benchmarks/README.md §6):
      on Adult only age is smoothed, and 1-way / 2-way / 3-way TVD (medians
      of six seeds) went from 0.0103 / 0.0292 / 0.0599 to 0.0099 / 0.0291 /
      0.0598, lower on 5 of 6 seeds each (the others equal, or 1-way
      higher on one); Adult with twinify's model and the loans-like table
      (two count columns smoothed) are in benchmarks/README.md §6.
    multires: with selection "all", the share of the multi-way tables' rho
      spent on coarse copies of them (multi-resolution measurement): each
      2-way table with a numeric column whose multi-way view (coarse view,
      else cells) has more than `multires_cells` cells is measured once more
      (centred like the others) with that column seen in `multires_cells`
      runs of those cells, and with `multires_order` 3
      (the default; 2: pairs only) also each of the target's 3-way tables
      with such a column. A coarse
      cell sums many fine cells but gets the same noise, so broad relations
      (older people working fewer hours) come out much clearer, at the cost
      of more noise on the fine tables. 0 (the default) turns it off.
      Measured on Adult at epsilon = 1 (benchmarks/README.md §6):
      `multires=0.3` brings the Rubin's-rules coverage of
      `coverage_napsumq.py` from 0.54 to 0.66 (age slope 0.386 -> 0.412,
      real 0.456) but costs 0.0005-0.0015 of 3-way TVD; for inference, not
      for the twin's tables. Tables whose coarse views have at most
      `multires_cells` cells (small data) get no copies.
    residuals: with selection "all", release every 2- and 3-way table
      centred (`jtwin.marginals.residual`): its 1-way parts, which the 1-way
      tables measure once, are projected out, which lowers the table's L2
      sensitivity to sqrt(prod (1 - 1/cells)) and so its noise for the same
      rho (by sqrt(2) for a table with a binary column). The fit uses the
      exact likelihood of the centred release.
    smoothness: weight of the prior that each component's share of a numeric
      column's cells varies smoothly across neighbouring cells (a penalty on
      second differences, `jtwin.marginals.mixture_marginals.roughness`),
      for columns that multi-way tables see through a coarse view: within a
      coarse cell only this prior tells how the components share the fine
      cells. 0 turns it off. Measured at epsilon = 1 (benchmarks/README.md
      §6): Adult, median of 5 seeds, 2-way / 3-way TVD 0.0333 / 0.0677 ->
      0.0326 / 0.0666; per seed (0 / 1), diamonds 0.0534 / 0.0575 -> 0.0476 /
      0.0485, the loans-like table 0.0607 / 0.0619 -> 0.0581 / 0.0604, Adult
      with twinify's bare model 0.0373 / 0.0382 -> 0.0367 / 0.0372.
    round_steps, final_steps, posterior_steps: Adam steps per AIM round, for
      the final MAP fit and for the posterior. The posterior is NOT run to
      convergence: on Adult its scales are about 0.19 everywhere after 300
      steps, and 1.5-4 after 1,500 for components that carry no weight (a
      mixture's parameters are not identifiable), which makes the twin
      worse (2-way TVD 0.0362 vs 0.0348) and does not improve the coverage
      of Rubin's-rules intervals (benchmarks/README.md).
    learning_rate: Adam's peak learning rate (cosine decay).
    init_spread: sd of the random logits that break the components' symmetry.
    init_peak: each component starts with one raised cell per column (see
      `jtwin.marginals.fit.initial_theta`).
    max_value_cells, num_bins, split_bins: see `jtwin.marginals.cells.build_cells`.
    ensemble: the most mixtures fitted from different starting points to
      the same noisy tables and joined into one (`jtwin.marginals.ensemble`),
      each of K / M components; M = min(ensemble, K // 50, at least 1), so
      that every member keeps 50 components (K = 400: 8 x 50; K = 200:
      4 x 50; K < 100: one mixture of K, as with ensemble = 1). The default
      8 x 50 against 4 x 50 (ten Adult seeds at epsilon = 1): 3-way TVD
      0.0612 -> 0.0603, lower on 9 seeds; lower on every seed of the
      loans-like table, diamonds and Adult with twinify's bare model
      (benchmarks/README.md §6); the fit takes about twice as long.
    max_coarse: most cells of an undeclared numeric column's coarse view in
      multi-way tables; default: from the DP row count and the planned noise
      (`_coarse_size`: 16 on Adult, 6 on a 10,000-row table at epsilon = 1).
    coarse_views: multi-way tables use the numeric columns' coarse views
      (`jtwin.marginals.cells.coarsen`) while 1-way tables use every cell.
    domain: "dp" (default): undeclared domain items (categories, flags, the
      bin edges of numeric columns without bounds) are released under DP
      (`jtwin.dp_domain`) from `domain_epsilon` (default 0.09 epsilon, and
      10% of delta), only when something is undeclared; a column whose
      categories are released gets `CATEGORY_TRANSFER` of its 1-way table's
      share of rho there too (a lower category threshold), and its 1-way
      table reuses the released noisy label counts; "data": read off the
      data (NOT covered by epsilon; listed in `inferred_from_data`).
    domain_epsilon: see `domain`.
    check_delta: optional callable(delta, rows) -> exception, raised when
      delta > 1 / rows (rows: the DP row count) before anything else is spent.
    source: the data's name in error messages.
    progress: optional callable(fraction of the run done, text): spending
      the budget (AIM's rounds included) moves it from 0 to 0.5, and the
      ensemble's fits, one after another, from 0.5 to 1.
    devices: count the tables with the rows sharded over this many local
      devices (one psum; `jtwin.marginals.counting_sharded`); 1: on the host,
      all tables of a step in one blocked pass. Same released values either way.

  Returns:
    a `MarginalResult`.
  """
  from jtwin import data as jdata
  from jtwin.accounting import gaussian, zcdp
  from jtwin.models import make_mixture_model
  t0 = time.perf_counter()
  if isinstance(key, (int, np.integer)):
    key = root_key(int(key))
  if isinstance(spec, (str, bytes)) or hasattr(spec, "__fspath__"):
    from jtwin.spec import parse_model_file
    spec = parse_model_file(spec)
  if selection not in SELECTIONS:
    raise JtwinInputError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
  if selection == "none" and not queries:
    raise JtwinInputError("selection 'none' measures only the query cliques, but none were "
                          "given: pass --queries FILE (or a query file as MODEL), or choose "
                          "another --select")
  if int(ensemble) != ensemble or ensemble < 1:
    raise JtwinInputError(f"ensemble must be a positive integer, got {ensemble}")
  if not isinstance(residuals, (bool, np.bool_)):
    raise JtwinInputError(f"residuals must be True or False, got {residuals!r}")
  if not (math.isfinite(smoothness) and smoothness >= 0):
    raise JtwinInputError(f"smoothness must be a finite number >= 0, got {smoothness}")
  if not (math.isfinite(one_way_smoothing) and one_way_smoothing >= 0):
    raise JtwinInputError(f"one_way_smoothing must be a finite number >= 0, got {one_way_smoothing}")
  ensemble = int(min(ensemble, max(1, int(num_components) // MIN_MEMBER_COMPONENTS)))
  per_member = -(-int(num_components) // ensemble)
  if not 0.0 < one_way_fraction < 1.0:
    raise JtwinInputError(f"one_way_fraction must be in (0, 1), got {one_way_fraction}")
  if not (math.isfinite(learning_rate) and learning_rate > 0):
    raise JtwinInputError(f"learning_rate must be a finite number > 0, got {learning_rate}")
  if not (isinstance(multires, (int, float)) and 0.0 <= multires < 1.0):
    raise JtwinInputError(f"multires must be a share in [0, 1), got {multires!r}")
  if isinstance(multires_cells, bool) or not isinstance(multires_cells, (int, np.integer)) \
      or multires_cells < 2:
    raise JtwinInputError(f"multires_cells must be an integer >= 2, got {multires_cells!r}")
  if multires_order not in (2, 3):
    raise JtwinInputError(f"multires_order must be 2 or 3, got {multires_order!r}")
  names = list(spec.names)
  from jtwin import dp_domain, table_store
  streaming = isinstance(frame, CsvSource)
  if not streaming:
    jdata.select_columns(frame, spec, source=source)   # every model column is there
  # only Gaussian mechanisms (no selection): their composition is accounted exactly
  composition = "gdp" if selection in ("all", "none") else "zcdp"
  n_det = sum(1 for f in spec.features if f.determined_by)
  rest_share = (1.0 - dp_domain.DEFAULT_DOMAIN_FRACTION if domain_epsilon is None else
                1.0 - float(domain_epsilon) / float(epsilon) if epsilon and epsilon > 0 else 0.0)
  # a 1-way table's expected share of rho, of which CATEGORY_TRANSFER moves to the labels
  # with one modelled column nothing is measured after the 1-way table: it gets the whole budget
  if len(names) - n_det < 2 and not queries:
    one_way_fraction = 1.0
  table_share = one_way_fraction * rest_share / (len(names) - n_det + DERIVED_SHARE * n_det)
  release_rng = numpy_generator(jax.random.fold_in(key, _RELEASE_TAG))

  def plan(data, data_spec):
    pub = dp_domain.plan_release(
        release_rng, data, data_spec, epsilon=epsilon, delta=delta, domain=domain,
        domain_epsilon=domain_epsilon, non_private=non_private, need_edges=True,
        edge_levels=cl._quantile_levels(num_bins), max_value_cells=max_value_cells,
        composition=composition, source=source,
        category_share=CATEGORY_TRANSFER * max(table_share, 0.0))
    if check_delta is not None and pub.delta > 1.0 / pub.rows:
      raise check_delta(pub.delta, pub.rows)
    return pub

  def cells_for(pub, data=None):
    resolved = (jdata.resolve_domain(data, pub.spec, source=source, warn=False)   # warned below
                if data is not None else table_store.declared_domain(pub.spec))
    return cl.build_cells(data, pub.spec, resolved, max_value_cells=max_value_cells,
                          num_bins=num_bins, split_bins=split_bins,
                          edges=pub.release.edges), resolved

  plot_rows = None
  if streaming:
    encoded = streamed.encode_csv(frame, spec, _workdir, plan=plan, cells_for=cells_for,
                                  name=source)
    public, base_codes, plot_rows = encoded.public, encoded.codes, encoded.sample
    cells, resolved = cells_for(public)
  else:
    public = plan(frame, spec)
    frame = public.frame
    cells, resolved = cells_for(public, frame)
    base_codes = cl.encode_cells(frame, cells, resolved, source=source)
  spec, delta = public.spec, public.delta
  scratch = (lambda name: os.path.join(_workdir, name + ".npy")) if streaming else (
      lambda name: None)
  n = int(base_codes.shape[0])
  timings = {}
  smoothed, run_smoothed = [], []
  # columns declared `determined_by` another leave the model (jtwin.marginals.derived)
  determined = {f.name: f.determined_by for f in spec.features if f.determined_by}
  all_cells, all_codes, all_names = cells, base_codes, names
  if determined:
    keep = [j for j, name in enumerate(names) if name not in determined]
    cells = tuple(cells[j] for j in keep)
    base_codes = streamed.recode(base_codes, lambda b: b[:, keep], len(keep), scratch("model"))
    names = [names[j] for j in keep]
  d = len(cells)
  col = {name: j for j, name in enumerate(names)}
  named = [("--target", target)] if target is not None else []
  named += [("query clique", x) for q in queries for x in q]
  for what, x in named:
    if x in determined:
      advice = (f"use '{determined[x]}' instead" if what == "--target" else
                f"name '{determined[x]}' in the clique instead of '{x}' (or drop '{x}' if "
                f"'{determined[x]}' is already there)")
      raise JtwinInputError(f"{what} '{x}' is declared 'determined_by = {determined[x]}' in the "
                            f"model file, so it is not modelled; {advice}")
  # each clique once; a one-column clique is a 1-way table, which is measured anyway
  forced = [q for q in dict.fromkeys(_clique(q, col, source) for q in queries) if len(q) > 1]
  target_col = None
  if target is not None:
    if target not in col:
      raise JtwinInputError(f"--target '{target}' is not a modelled column")
    target_col = col[target]
    if selection in ("none", "mst"):
      import warnings
      warnings.warn(f"--target '{target}' has no effect with --select {selection} (only 'all' "
                    "and 'aim' measure the 3-way tables that contain it)", stacklevel=3)
  if multires > 0 and selection != "all":
    import warnings
    warnings.warn(f"multires has no effect with --select {selection} (only 'all' measures "
                  "the coarse copies)", stacklevel=3)
  timings["cells"] = time.perf_counter() - t0

  # the DP domain's histograms (if any) took their share of this budget
  to_rho, to_epsilon = ((gaussian.composed_rho, gaussian.composed_epsilon)
                        if composition == "gdp" else (zcdp.cdp_rho, zcdp.cdp_epsilon))
  rho = math.inf if non_private else _conservative_rho(to_rho, to_epsilon, public.epsilon_rest,
                                                      public.delta_rest) - public.release.rho
  k_noise, k_select, k_init, k_post = jax.random.split(key, 4)
  noise_rng, select_rng = numpy_generator(k_noise), numpy_generator(k_select)
  budget = _Budget()
  log = []
  count = make_counter(devices)   # exact tables (PRIVATE), many per pass over the rows

  def measure(views, sigma, part, centred=()):
    counts = count(codes, sizes, [views])[0]
    shape = tuple(int(sizes[v]) for v in views)
    s = rs.sensitivity(shape, centred)
    if non_private:
      noisy, var = counts, np.ones_like(counts)
    else:
      noisy, var = gaussian_measure(counts, sigma, noise_rng), np.full(counts.shape, sigma**2)
      budget.measure(part, sigma, s)
    if centred:
      noisy = rs.centre(noisy, shape, centred)
    log.append(([names[view_column[v]] for v in views], int(counts.size),
                0.0 if non_private else sigma, s))
    return Measurement(tuple(views), noisy, var, tuple(centred), shape)

  # 1-way tables, then compression
  rho_rest = rho
  # a determined column's table with its parent replaces its 1-way table, with the
  # budget of DERIVED_SHARE 1-way tables (its map must be right for rare cells too)
  # a column whose labels the domain step counted keeps 1 - CATEGORY_TRANSFER of a share
  unit = [1.0 - CATEGORY_TRANSFER if name in public.release.label_counts else 1.0
          for name in names]
  shares = sum(unit) + DERIVED_SHARE * len(determined)
  sigma1 = math.sqrt(shares / (2.0 * one_way_fraction * rho)) if not non_private else 0.0
  codes, sizes, view_column = base_codes, [c.size for c in cells], list(range(d))
  count(codes, sizes, [(j,) for j in range(d)])
  ones = [measure((j,), sigma1 / math.sqrt(unit[j]), "one_way") for j in range(d)]
  derived = _measure_derived(all_cells, all_codes, all_names, determined, count,
                             sigma1 / math.sqrt(DERIVED_SHARE), noise_rng, budget, log,
                             non_private)
  if not non_private:
    rho_rest = rho - budget.parts["one_way"]
    ones = _with_label_counts(ones, cells, public.release)
    choose, run_smoothed = run_decoding.run_chooser(cells, ones, one_way_smoothing)
    cells, maps = cl.compress(cells, [m.noisy for m in ones], compress_sigmas * sigma1,
                              noise_sd=sigma1, run_weights=choose)
    ones = [Measurement(m.clique, mp @ m.noisy, mp @ m.variance) for m, mp in zip(ones, maps)]
    ones, smoothed = histogram.smooth_one_way(cells, ones, one_way_smoothing)
    group = [np.concatenate([c.base_to_group(), [c.num_cells]]).astype(np.int32) for c in cells]
    codes = streamed.recode(
        base_codes, lambda b: np.stack([g[b[:, j]] for j, g in enumerate(group)], axis=1), d,
        scratch("groups"))
  if coarse_views:
    if max_coarse is None:
      max_coarse = _coarse_size(_weighted_total(ones), rho_rest, d, selection, target_col,
                                non_private)
    cells = cl.coarsen(cells, max_coarse)
  total_cells = sum(c.size for c in cells)
  if total_cells > MAX_TOTAL_CELLS:
    big = sorted(cells, key=lambda c: -c.size)[:3]
    raise JtwinInputError(
        f"{source}: the columns have {total_cells:,} cells in all (the fit's Gram matrix "
        f"needs at most {MAX_TOTAL_CELLS:,}); the largest are " +
        ", ".join(f"'{c.name}' ({c.size:,})" for c in big) +
        ": declare bins (or model numeric columns as Normal/Poisson) for them")
  total = max(_weighted_total(ones), 1.0) if not non_private else float(n)
  # views: each column's cells, then the coarse views used in multi-way tables
  extra = _multires_views(cells, multires_cells) if multires > 0 and selection == "all" else ()
  view_column, sizes, mv = mm.views(cells, extra)
  view_column, sizes = list(view_column), list(sizes)
  num_coarse = len(view_column) - d - len(extra)
  coarse_maps = ([cells[j].group_to_coarse().astype(np.int32) for j in view_column[d:d + num_coarse]]
                 + [_run_map(cells[j], runs) for j, runs in extra])
  codes = streamed.recode(
      codes, lambda b: np.concatenate([b] + [m_[b[:, j], None] for m_, j in
                                             zip(coarse_maps, view_column[d:])], axis=1),
      len(view_column), scratch("views"))
  multiway = lambda clique: tuple(sorted(mv[c] for c in clique))
  msizes = [sizes[mv[j]] for j in range(d)]
  for q in forced:
    if table_size(msizes, q) > max_cells:
      raise JtwinInputError(f"query clique ({', '.join(names[c] for c in q)}) has "
                            f"{table_size(msizes, q):,} cells, more than the cap of "
                            f"{max_cells:,}; split it into smaller cliques")
  cond = {mv[target_col]} if target_col is not None else set()
  for q in forced:
    if len(q) == 3:
      cond.add(min(multiway(q), key=lambda v: sizes[v]))
  index = mm.make_index(cells, per_member, cond, extra)
  fitter = mfit.make_fitter(index, prior_concentration, smoothness)
  theta = mfit.initial_theta(index, k_init, [m.noisy for m in ones], init_spread, init_peak)
  measurements = list(ones)
  timings["one-way"] = time.perf_counter() - t0 - timings["cells"]

  def refit(theta, steps):
    targets = mfit.make_targets(index, measurements, total)
    return fitter.fit_map(theta, targets, steps, learning_rate)[0]

  # forced cliques (query file / --queries)
  if forced:
    share = rho_rest if selection == "none" else rho_rest * min(0.5, len(forced) / (len(forced) + d))
    sigma_q = math.sqrt(len(forced) / (2.0 * share)) if not non_private else 0.0
    count(codes, sizes, [multiway(q) for q in forced])
    for q in forced:
      measurements.append(measure(multiway(q), sigma_q, "queries"))
    rho_rest -= 0.0 if non_private else budget.parts["queries"]
  aim_cand = (sel.workload(d, msizes, target=target_col, max_cells=max_cells, extra=forced)
              if selection == "aim" else {})
  if aim_cand:      # AIM scores candidates against the current model (none: 1-way only)
    theta = refit(theta, round_steps * 3)
    cand = aim_cand
    theta = _aim(measurements, theta, refit, index, codes, sizes, total, rho_rest,
                 rounds or 16 * d, {multiway(r): w for r, w in cand.items()}, budget,
                 measure, select_rng, round_steps, non_private, progress, count)
  elif selection == "mst" and d > 1:
    _mst(measurements, ones, cells, codes, sizes, multiway, total, rho_rest, budget, measure,
         select_rng, non_private, count)
  elif selection == "all":
    cand = [multiway(r) for r in sel.workload(d, msizes, target=target_col, max_cells=max_cells)]
    # centring a one-cell axis would zero the table: such axes stay as they are
    axes = [tuple(a for a, v in enumerate(r) if sizes[v] > 1) if residuals else ()
            for r in cand]
    # the target keeps its view in the copies (a 3-way table's conditioning column)
    extra_view = {j: d + num_coarse + i for i, (j, _) in enumerate(extra) if j != target_col}
    coarse_cand = [tuple(sorted(extra_view.get(view_column[v], v) for v in r))
                   for r in cand if len(r) <= multires_order
                   and any(view_column[v] in extra_view for v in r)]
    coarse_axes = [tuple(a for a, v in enumerate(r) if sizes[v] > 1) if residuals else ()
                   for r in coarse_cand]
    load = sum(rs.sensitivity([sizes[v] for v in r], a)**2 for r, a in zip(cand, axes))
    coarse_load = sum(rs.sensitivity([sizes[v] for v in r], a)**2
                      for r, a in zip(coarse_cand, coarse_axes))
    share = multires if coarse_cand else 0.0
    sigma = math.sqrt(load / (2.0 * rho_rest * (1 - share))) if not non_private and cand else 0.0
    count(codes, sizes, cand)
    for r, a in zip(cand, axes):
      measurements.append(measure(r, sigma, "measurement", a))
    if coarse_cand:
      sigma_c = math.sqrt(coarse_load / (2.0 * rho_rest * share)) if not non_private else 0.0
      count(codes, sizes, coarse_cand)
      for r, a in zip(coarse_cand, coarse_axes):
        measurements.append(measure(r, sigma_c, "measurement", a))
  timings["select and measure"] = time.perf_counter() - t0 - sum(timings.values())

  targets = mfit.make_targets(index, measurements, total)
  if progress is not None:
    progress(0.5, f"{len(log)} tables measured; fitting mixture 1 of {ensemble}")
  members = []
  for r in range(ensemble):   # r = 0 continues from theta (AIM's rounds refined it)
    start = theta if r == 0 else mfit.initial_theta(
        index, jax.random.fold_in(k_init, r), [m.noisy for m in ones], init_spread, init_peak)
    fitted, _ = fitter.fit_map(start, targets, final_steps, learning_rate)
    members.append(jax.tree.map(np.asarray, fitter.fit_posterior(
        fitted, targets, k_post if r == 0 else jax.random.fold_in(k_post, r), posterior_steps,
        learning_rate * 0.2)))
    if progress is not None and r + 1 < ensemble:
      progress(0.5 + 0.5 * (r + 1) / ensemble, f"fitting mixture {r + 2} of {ensemble}")
  post = ens.join_mixtures(members)
  if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(post)):
    raise NonFiniteError("the marginal fit diverged (non-finite parameters); lower "
                         "learning_rate")
  if progress is not None:
    progress(1.0, "fitted")
  timings["fit"] = time.perf_counter() - t0 - sum(timings.values())

  spent = sum(budget.parts.values()) + public.release.rho
  if non_private:
    record = MarginalPrivacyRecord("non-private", math.inf, None, delta, math.inf, math.inf,
                                   math.inf, math.inf, math.inf, budget.tables or len(log), 0)
  else:
    parts = ((", DP domain histograms included" if public.release.rho > 0 else "")
             + " + row count" + (" + DP domain" if public.release.epsilon > 0 else "")
             + (" + category threshold delta" if public.release.rho > 0
                and public.release.merged else ""))
    record = MarginalPrivacyRecord(
        "calibrated", float(to_epsilon(spent, public.delta_rest) + public.epsilon),
        float(epsilon), float(delta),
        float(spent), budget.parts["one_way"], budget.parts["queries"],
        budget.parts["selection"], budget.parts["measurement"], budget.tables,
        budget.selections,
        accountant=(_GDP_ACCOUNTANT if composition == "gdp" else
                    MarginalPrivacyRecord._field_defaults["accountant"])
        + parts + " (basic composition)", rho_domain=public.release.rho)
  num_components = per_member * ensemble
  model = make_mixture_model(mm.cell_features(cells), num_components)
  inferred = [f"{c.name}: {', '.join(c.from_data)}" for c in all_cells if c.from_data]
  if inferred:
    import warnings
    warnings.warn(jdata.inferred_warning(inferred), stacklevel=2)
  public = public._replace(frame=None)     # the private rows never leave in the result
  return MarginalResult(post, cells, record, log, total, model, num_components, inferred,
                        timings, public, ensemble, tuple(derived), tuple(smoothed), plot_rows,
                        tuple(run_smoothed))


def _with_label_counts(ones: list, cells, release) -> list:
  """1-way tables combined with the DP domain's noisy label counts (post-processing).

  The domain step released the labels of some categorical columns together
  with their noisy counts (and a noisy missing count), independent of the
  1-way tables' noise: where both measured a cell, the inverse-variance
  weighted mean and its smaller variance replace the 1-way table's. The
  domain's counts of labels near its threshold lean high (they were released
  because their noise was high), by a few rows at most once weighted; and
  they count the rows that the release's filter later leaves out (missing
  where a DP missing flag is "no": fewer than about two noise sds of rows).
  """
  out = []
  for m, c in zip(ones, cells):
    found = release.label_counts.get(c.name) if c.kind == "category" else None
    if found is None or release.category_std <= 0:
      out.append(m)
      continue
    labels, missing = found
    other = np.full(m.noisy.shape, np.nan)
    for i, label in enumerate(c.labels):
      if label in labels:
        other[i] = labels[label]
    if c.missing:
      other[-1] = missing
    var = release.category_std ** 2
    has = np.isfinite(other)
    w = np.where(has, m.variance / (m.variance + var), 0.0)
    noisy = np.where(has, (1.0 - w) * m.noisy + w * np.nan_to_num(other), m.noisy)
    variance = np.where(has, m.variance * var / (m.variance + var), m.variance)
    out.append(Measurement(m.clique, noisy, variance, m.centred, m.shape))
  return out


def _conservative_rho(to_rho, to_epsilon, epsilon: float, delta: float) -> float:
  """`to_rho(epsilon, delta)`, lowered until `to_epsilon` of it is <= epsilon: the
  numerical inversion can overshoot by ~1e-9 relative (at epsilon = 1e-3 the certified
  epsilon came out 9e-13 above the target)."""
  rho = to_rho(epsilon, delta)
  for _ in range(60):
    if to_epsilon(rho, delta) <= epsilon:
      return rho
    rho *= 1.0 - 1e-9
  return rho * 0.99


def _multires_views(cells, num: int) -> tuple:
  """(column, runs) of a coarser view of every numeric column whose multi-way view
  (its coarse view, else its cells) has more than `num` cells: those cells joined
  into `num` runs of about equal numbers of them. Public: depends only on the cells."""
  out = []
  for j, c in enumerate(cells):
    base = c.coarse if c.coarse is not None else tuple((g,) for g in range(c.num_cells))
    if c.kind != "numeric" or len(base) <= num:
      continue
    which = (np.arange(len(base)) * num) // len(base)
    out.append((j, tuple(tuple(g for i in np.flatnonzero(which == w) for g in base[i])
                         for w in range(num))))
  return tuple(out)


def _run_map(cell, runs) -> np.ndarray:
  """int32 [size]: the run of every cell of `cell` (the missing cell last)."""
  out = np.zeros(cell.size, np.int32)
  for i, members in enumerate(runs):
    out[list(members)] = i
  if cell.missing:
    out[-1] = len(runs)
  return out


def _coarse_size(rows: float, rho_rest: float, d: int, selection: str,
                 target_col: Optional[int], non_private: bool) -> int:
  """Cells of an undeclared numeric column's coarse view, from the DP row count.

  Each coarse cell's row of a 2-way table spreads about n / c rows over the
  partner column's cells; with c = n / (25 sigma), sigma the noise sd planned
  for this selection's tables, a row against a 25-cell partner holds about
  one noise sd per cell. Between 4 and `cells.MAX_COARSE` (16). Measured
  (epsilon = 1, 2-way TVD, seeds 0 / 1): a 10,000-row loans table gets 6
  (0.084 / 0.080 vs 0.098 / 0.095 with 16, `benchmarks/ablate_napsumq.py
  --data loans`); Adult with twinify's bare model keeps 16 (`--data
  adult_twinify --options "target='income'"`: 0.0373 / 0.0382, against
  0.0395 / 0.0383 with `max_coarse=10`). Public: n is the DP estimate.
  """
  if non_private:
    return cl.MAX_COARSE
  tables = d - 1 if selection == "mst" else d * (d - 1) // 2
  if target_col is not None and selection != "mst":
    tables += (d - 1) * (d - 2) // 2
  sigma = math.sqrt(max(tables, 1) / (2.0 * max(rho_rest, 1e-300)))
  return int(np.clip(round(max(rows, 1.0) / (25.0 * sigma)), 4, cl.MAX_COARSE))


def _measure_derived(cells, codes, names, determined, count, sigma, rng, budget, log,
                     non_private) -> list:
  """Learns each determined column's map from one noisy table with its parent.

  The table is parent base cell x child cell (missing cells included), noise
  sd `sigma`, counted on the cell codes before compression (a base cell's
  code is its index then). Warns when the noisy table says the column is far
  from a function of its parent (post-processing of that table).
  """
  from jtwin.marginals import derived as dv
  out = []
  if not determined:
    return out
  col = {name: j for j, name in enumerate(names)}
  pairs = [(col[p], col[c]) for c, p in determined.items()]
  sizes = [c.size for c in cells]
  tables = count(codes, sizes, [tuple(sorted(pc)) for pc in pairs])
  for (jp, jc), counts in zip(pairs, tables):
    table = counts.reshape(sizes[min(jp, jc)], sizes[max(jp, jc)])
    table = table if jp < jc else table.T          # [parent, child]
    if non_private:
      noisy = table
    else:
      noisy = gaussian_measure(table, sigma, rng)
      budget.measure("one_way", sigma)
    log.append(([names[jp], names[jc]], int(table.size), 0.0 if non_private else sigma, 1.0))
    mapping = dv.learn_map(noisy)
    share, sd = dv.off_map_share(noisy, mapping, sigma)
    if share > 0.02 + 3.0 * sd:
      import warnings
      warnings.warn(f"'{names[jc]}' is declared 'determined_by = {names[jp]}', but in the "
                    f"(noisy) data about {100 * share:.0f}% of rows have a different "
                    f"'{names[jc]}' than the most common one for their '{names[jp]}'; the "
                    "twin uses the most common one. Remove 'determined_by' if it is not a "
                    "function", stacklevel=3)
    out.append(dv.DerivedColumn(names[jc], names[jp], cells[jc], mapping, jc))
  return out


def _clique(names, col, source) -> tuple:
  bad = [x for x in names if x not in col]
  if bad:
    raise JtwinInputError(f"query clique ({', '.join(names)}): column '{bad[0]}' is not a "
                          f"modelled column of {source}")
  clique = tuple(sorted({col[x] for x in names}))
  if len(clique) > 3:
    raise JtwinInputError(f"query clique ({', '.join(names)}) has {len(clique)} columns; "
                          "cliques of at most 3 columns are supported")
  return clique


def _aim(measurements, theta, refit, index, codes, sizes, total, rho_rest, rounds, cand,
         budget, measure, rng, round_steps, non_private, progress, count):
  """AIM's select-measure-refit loop (McKenna et al. 2022), spending exactly rho_rest.

  `cand` maps candidate cliques (view ids) to their workload weights."""
  cliques = list(cand)
  weights = np.array([cand[r] for r in cliques])
  positions = [mm.clique_positions(index, r) for r in cliques]
  seg = np.concatenate([np.full(len(p), i) for i, p in enumerate(positions)])
  flat_pos = np.concatenate(positions)
  exact = np.concatenate(count(codes, sizes, cliques))   # PRIVATE
  cells_of = np.array([len(p) for p in positions], float)
  vector = jax.jit(lambda th: mm.marginal_vector(index, th))
  if non_private:
    sigma, eps0 = 1.0, math.inf
  else:
    sigma = math.sqrt(rounds / (2.0 * 0.9 * rho_rest))
    eps0 = math.sqrt(8.0 * 0.1 * rho_rest / rounds)
  used, last, t = 0.0, False, 0
  max_rounds = rounds if non_private else 10 * rounds
  while not last and t < max_rounds:
    t += 1
    if not non_private:
      remaining = rho_rest - used
      if remaining < 2.0 * (0.5 / sigma**2 + eps0**2 / 8.0):
        remaining *= 1.0 - 1e-9
        sigma = math.sqrt(1.0 / (2.0 * 0.9 * remaining))
        eps0 = math.sqrt(8.0 * 0.1 * remaining)
        last = True
      used += 0.5 / sigma**2 + eps0**2 / 8.0
    model_ans = total * np.asarray(vector(theta))[flat_pos]
    bias = math.sqrt(2.0 / math.pi) * sigma * cells_of if not non_private else 0.0
    scores = weights * (sel.l1_errors(exact, model_ans, seg, len(cliques)) - bias)
    pick = sel.exponential_mechanism(scores, eps0, float(weights.max()), rng)
    if not non_private:
      budget.select(eps0)
    r = cliques[pick]
    m = measure(r, sigma, "measurement")
    measurements.append(m)
    before = model_ans[seg == pick]
    theta = refit(theta, round_steps)
    after = total * np.asarray(vector(theta))[positions[pick]]
    if progress is not None:
      frac = t / max_rounds if non_private else min(used / rho_rest, 1.0)
      progress(0.5 * 0.99 * frac, f"round {t}: {len(r)}-way table, sigma {sigma:.3g}")
    if not non_private and np.abs(after - before).sum() <= math.sqrt(2 / math.pi) * sigma * len(before):
      sigma /= 2.0
      eps0 *= 2.0
  return theta


def _mst(measurements, ones, cells, codes, sizes, multiway, total, rho_rest, budget, measure,
         rng, non_private, count):
  """MST (McKenna et al. 2021): a maximum spanning tree of 2-way cliques by the
  exponential mechanism (half the remaining rho), then measured (the other half)."""
  d = len(cells)
  p1 = []
  for j, m in enumerate(ones):
    p = np.maximum(m.noisy, 0.0)
    p1.append(np.bincount(cells[j].group_to_coarse(), weights=p / max(p.sum(), 1e-12)))
  pairs = [(a, b) for a in range(d) for b in range(a + 1, d)]
  err = {}
  count(codes, sizes, [multiway(e) for e in pairs])
  for a, b in pairs:
    views = multiway((a, b))
    first, second = (a, b) if views[0] == multiway((a,))[0] else (b, a)
    indep = total * np.outer(p1[first], p1[second]).ravel()
    err[(a, b)] = np.abs(count(codes, sizes, [views])[0] - indep).sum()   # PRIVATE
  eps0 = math.sqrt(8.0 * (rho_rest / 2.0) / max(d - 1, 1)) if not non_private else math.inf
  tree = sel.spanning_tree(d, err, eps0, rng)
  if not non_private:
    for _ in tree:
      budget.select(eps0)
  sigma = math.sqrt(max(d - 1, 1) / (2.0 * (rho_rest / 2.0))) if not non_private else 0.0
  for e in tree:
    measurements.append(measure(multiway(e), sigma, "measurement"))


def sample_marginals(key: jax.Array, result: MarginalResult, num_rows: int, *,
                     records_per_draw: int = 1, sampling: Optional[str] = None,
                     triples: bool = True):
  """Synthetic rows (a DataFrame) from the fitted model: post-processing.

  Args:
    key: PRNG key, or an int seed (tagged, so the same int as the fit's is safe).
    result: a `MarginalResult`.
    num_rows: rows to draw (an int >= 0; exactly this many, the last draw
      short when `records_per_draw` does not divide it).
    records_per_draw: rows per posterior draw (twinify's --m).
    sampling: "balanced" (the default with one row per draw): the mixture at
      the posterior mean, with every component's and cell's count rounded
      systematically instead of drawn (`jtwin.marginals.balanced`), so the
      twin's tables carry far less Monte Carlo noise; "iid" (the default,
      and the only choice, with `records_per_draw` > 1): i.i.d. rows from
      the posterior predictive, a fresh posterior draw per row or per
      `records_per_draw` rows, as twinify does; use it for Rubin's rules.
      Measured on Adult at epsilon = 1 (benchmarks/README.md §6).
    triples: with balanced sampling, the swaps herd the rows toward the
      model's 3-way tables (over the columns' coarse views) as well as its
      2-way tables (`jtwin.marginals.swaps`); False: 2-way tables only (for
      comparisons).

  Raises:
    JtwinInputError: an unknown `sampling`, or "balanced" with
      `records_per_draw` > 1.
    TypeError, ValueError: `num_rows` or `records_per_draw` not a whole
      number in range, `key` neither a key nor an int seed.
  """
  from jtwin._validate import as_key, count
  from jtwin.models.posterior import MeanFieldParams
  if not isinstance(result, MarginalResult):
    raise TypeError(f"result must be a MarginalResult (from fit_marginals), got "
                    f"{type(result).__name__}")
  num_rows = count("num_rows", num_rows)
  records_per_draw = count("records_per_draw", records_per_draw, minimum=1)
  if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
    # a purpose tag, so that the same int given to fit_marginals and here
    # never makes the sampler reuse the measurement noise's keys
    key = jax.random.fold_in(root_key(count("key", key)), _SAMPLE_TAG)
  else:
    key = as_key(key)
  k_sample, k_decode = jax.random.split(key)
  post = MeanFieldParams(*[{k: jax.numpy.asarray(v) for k, v in part.items()}
                           for part in result.posterior])
  sampling = ens.resolve_sampling(sampling, records_per_draw)
  values, observed = ens.sample_posterior(k_sample, result.model, post, num_rows,
                                          records_per_draw=records_per_draw,
                                          members=result.ensemble, sampling=sampling,
                                          coarse=cl.coarse_maps(result.cells) if triples else None)
  return cl.decode_cells(np.rint(values).astype(np.int64), observed, result.cells,
                         numpy_generator(k_decode), derived=result.derived)


fit_marginals.__doc__ = _fit_marginals.__doc__
fit_marginals.__wrapped__ = _fit_marginals    # inspect.signature shows the options
