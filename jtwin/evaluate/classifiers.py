"""Classifiers for the distinguishability and utility metrics.

All work on one-hot features `X` (float [N, F], scipy.sparse CSR from
`encoding.one_hot`, or dense) with `sizes`, the number of one-hot columns of
each original column (its block). A binary classifier is fitted with
`fit(X, y, sizes)` and returns a function mapping features to real-valued
scores, where a score > 0 predicts the positive class.

Two sets of utility models with the same names and roles:

* `SKLEARN_MODELS` (`utility_models("sklearn")`): scikit-learn's
  `LogisticRegression`, `CategoricalNB` and `HistGradientBoostingClassifier`
  (plus our nearest centroid), used when scikit-learn is installed (the
  `evaluate` extra: `pip install 'jtwin[evaluate]'`);
* `MODELS`: our own NumPy/SciPy code, the fallback without scikit-learn.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

__all__ = [
    "Classifier",
    "LogisticFit",
    "MODELS",
    "fit_logistic",
    "fit_one_vs_rest",
    "sigmoid",
    "sklearn_version",
    "utility_models",
]

Scorer = Callable[[np.ndarray], np.ndarray]


class Classifier(NamedTuple):
  """A named binary classifier: `fit(X, y, sizes) -> scorer`."""
  name: str
  fit: Callable[[np.ndarray, np.ndarray, Sequence[int]], Scorer]


class LogisticFit(NamedTuple):
  """An L2-regularised logistic regression fit.

  Attributes:
    coef: float [F] weights.
    intercept: the (unpenalised) intercept.
    num_iter: Newton iterations used.
    converged: whether the gradient's max-norm fell below `tol`.
  """
  coef: np.ndarray
  intercept: float
  num_iter: int
  converged: bool

  def logits(self, x: np.ndarray) -> np.ndarray:
    return x @ self.coef + self.intercept


def sigmoid(z: np.ndarray) -> np.ndarray:
  """The logistic function, overflow-free."""
  return 0.5 * (1.0 + np.tanh(0.5 * z))


def _design(x):
  """(x for products, a Gram function h -> x^T diag(h) x) for dense or sparse.

  One-hot designs (density < 15%) go to scipy.sparse: the exact float64
  Gram matrix then costs N * nnz_per_row^2, far below the dense N * F^2.
  """
  import scipy.sparse

  if not scipy.sparse.issparse(x):
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or np.count_nonzero(x) > 0.15 * x.size:
      return x, lambda h: x.T @ (x * h[:, None])
  xs = scipy.sparse.csr_matrix(x, dtype=np.float64)
  xt = xs.T.tocsr()
  return xs, lambda h: (xt @ xs.multiply(h[:, None]).tocsr()).toarray()


NEWTON_MAX_FEATURES = 1000


def _fit_lbfgs(x, y: np.ndarray, l2: float, max_iter: int = 1000,
               tol: float = 1e-7) -> LogisticFit:
  """L-BFGS on mean log-loss + l2/2 |w|^2 (no F x F matrix is formed)."""
  import scipy.optimize

  n = x.shape[0]
  xt = x.T  # a transposed view: no copy of a sparse design

  def value_and_grad(beta):
    w, b = beta[:-1], beta[-1]
    z = x @ w + b
    value = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w
    r = (sigmoid(z) - y) / n
    return value, np.concatenate([xt @ r + l2 * w, [r.sum()]])

  mean = np.clip(y.mean(), 1e-6, 1 - 1e-6)
  beta0 = np.zeros(x.shape[1] + 1)
  beta0[-1] = np.log(mean / (1 - mean))
  res = scipy.optimize.minimize(value_and_grad, beta0, jac=True,
                                method="L-BFGS-B",
                                options={"maxiter": max_iter, "gtol": tol})
  return LogisticFit(res.x[:-1], float(res.x[-1]), int(res.nit),
                     bool(res.success))


def fit_logistic(x, y: np.ndarray, *, l2: float = 1e-4, max_iter: int = 50,
                 tol: float = 1e-8) -> LogisticFit:
  """Fits logistic regression by damped Newton's method (or L-BFGS).

  Minimises mean_i [log(1 + exp(z_i)) - y_i z_i] + l2 / 2 * |w|^2 with
  z = x @ w + b (the intercept b is not penalised). Each step solves the
  full (F + 1) Newton system with a backtracking (Armijo) line search.
  Sparse or mostly-zero (one-hot) `x` is handled as a scipy.sparse matrix,
  so 65k rows x 250 one-hot features converge in about a second. With more
  than `NEWTON_MAX_FEATURES` features the (F + 1)^2 Hessian would dominate
  time and memory, so L-BFGS (gradient tolerance 1e-7) is used instead.

  Args:
    x: float [N, F] features, dense or scipy.sparse.
    y: 0/1 [N] labels.
    l2: ridge strength on the weights (> 0).
    max_iter: maximum Newton iterations.
    tol: convergence threshold on the gradient's max-norm.

  Returns:
    A `LogisticFit`.
  """
  if l2 <= 0:
    raise ValueError(f"l2 must be > 0, got {l2}")
  x, gram = _design(x)
  y = np.asarray(y, dtype=np.float64)
  n, f = x.shape
  mean = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
  w = np.zeros(f)
  b = float(np.log(mean / (1 - mean)))
  if y.min() == y.max():  # one class: the intercept alone diverges
    return LogisticFit(w, float(np.sign(y[0] - 0.5) * 30.0), 0, True)
  if f > NEWTON_MAX_FEATURES:
    return _fit_lbfgs(x, y, l2)

  def objective(w, b):
    z = x @ w + b
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w)

  value = objective(w, b)
  converged = False
  it = 0
  for it in range(1, max_iter + 1):
    p = sigmoid(x @ w + b)
    r = p - y
    grad = np.concatenate([x.T @ r / n + l2 * w, [r.mean()]])
    if np.max(np.abs(grad)) < tol:
      converged = True
      it -= 1
      break
    h = p * (1 - p)
    hess = np.empty((f + 1, f + 1))
    hess[:f, :f] = gram(h) / n + l2 * np.eye(f)
    hess[:f, f] = hess[f, :f] = x.T @ h / n
    hess[f, f] = h.mean() + 1e-12
    try:
      step = -np.linalg.solve(hess, grad)
    except np.linalg.LinAlgError:
      step = -grad
    slope = float(grad @ step)
    t = 1.0
    while True:
      w_new, b_new = w + t * step[:f], b + t * step[f]
      new_value = objective(w_new, b_new)
      if new_value <= value + 1e-4 * t * slope or t < 1e-10:
        break
      t *= 0.5
    w, b = w_new, b_new
    if value - new_value < 1e-15 * max(1.0, abs(value)) and t < 1e-10:
      break
    value = new_value
  return LogisticFit(w, float(b), it, converged)


def _logistic(l2: float) -> Callable:
  def fit(x, y, sizes):
    del sizes
    result = fit_logistic(x, y, l2=l2)
    return result.logits
  return fit


def _column_sums(x) -> np.ndarray:
  return np.asarray(x.sum(0), dtype=np.float64).ravel()


def _naive_bayes(alpha: float = 1.0) -> Callable:
  """Categorical naive Bayes on the codes (Laplace smoothing `alpha`)."""
  def fit(x, y, sizes):
    y = np.asarray(y).astype(bool)
    block = np.repeat(np.asarray(sizes, dtype=float), sizes)
    n1, n0 = y.sum(), (~y).sum()
    log1 = np.log((_column_sums(x[y]) + alpha) / (n1 + alpha * block))
    log0 = np.log((_column_sums(x[~y]) + alpha) / (n0 + alpha * block))
    prior = np.log((n1 + alpha) / (n0 + alpha))
    weights = (log1 - log0).astype(np.float64)
    return lambda xt: xt @ weights + prior
  return fit


def _nearest_centroid(x, y, sizes):
  """Nearest centroid in one-hot space: |x - mu0|^2 - |x - mu1|^2."""
  del sizes
  y = np.asarray(y).astype(bool)
  mu1 = _column_sums(x[y]) / y.sum() if y.any() else np.zeros(x.shape[1])
  mu0 = (_column_sums(x[~y]) / (~y).sum() if (~y).any()
         else np.zeros(x.shape[1]))
  weights = 2.0 * (mu1 - mu0).astype(np.float64)
  const = float(mu0 @ mu0 - mu1 @ mu1)
  return lambda xt: xt @ weights + const


def _boosted_stumps(rounds: int = 100, rate: float = 0.3,
                    reg: float = 1.0) -> Callable:
  """Newton-boosted decision stumps on one-hot indicators (logistic loss).

  Each round picks the indicator whose split (x_j = 1 vs 0) most reduces the
  second-order loss and adds `rate` times its two leaf values.
  """
  def fit(x, y, sizes):
    import scipy.sparse

    del sizes
    y = np.asarray(y, dtype=np.float64)
    mean = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    base = np.log(mean / (1 - mean))
    score = np.full(y.shape, base)
    chosen, on, off = [], [], []
    xs = scipy.sparse.csr_matrix(x, dtype=np.float32)
    xt = xs.T.tocsr()
    xc = xs.tocsc()
    for _ in range(rounds):
      p = sigmoid(score)
      gh = np.stack([p - y, p * (1 - p)], axis=1)
      g1, h1 = (xt @ gh.astype(np.float32)).astype(np.float64).T
      g0, h0 = gh[:, 0].sum() - g1, gh[:, 1].sum() - h1
      gain = g1 ** 2 / (h1 + reg) + g0 ** 2 / (h0 + reg)
      j = int(np.argmax(gain))
      v1 = -rate * g1[j] / (h1[j] + reg)
      v0 = -rate * g0[j] / (h0[j] + reg)
      score += np.where(xc[:, j].toarray().ravel() > 0, v1, v0)
      chosen.append(j)
      on.append(v1)
      off.append(v0)
    chosen, on, off = np.array(chosen), np.array(on), np.array(off)

    def scorer(xt):
      xj = scipy.sparse.csc_matrix(xt)[:, chosen].toarray() > 0
      return base + np.where(xj, on, off).sum(1)
    return scorer
  return fit


MODELS: tuple[Classifier, ...] = (
    Classifier("logistic (l2=1e-4)", _logistic(1e-4)),
    Classifier("logistic (l2=1e-2)", _logistic(1e-2)),
    Classifier("logistic (l2=1)", _logistic(1.0)),
    Classifier("naive Bayes", _naive_bayes()),
    Classifier("nearest centroid", _nearest_centroid),
    Classifier("boosted stumps", _boosted_stumps()),
)
"""Our own utility models, simple to strong. The first is the headline model."""


def sklearn_version() -> Optional[str]:
  """scikit-learn's version, or None if it is not installed."""
  try:
    import sklearn
  except ImportError:
    return None
  return sklearn.__version__


def _codes(x, sizes: Sequence[int]) -> np.ndarray:
  """The integer codes [N, D] behind a one-hot design (argmax per block)."""
  import scipy.sparse

  sizes = np.asarray(sizes, dtype=np.int64)
  offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  xs = scipy.sparse.csr_matrix(x)
  xs.sort_indices()
  n, d = xs.shape[0], sizes.size
  if xs.nnz == n * d and np.all(np.diff(xs.indptr) == d):
    return (xs.indices.reshape(n, d) - offsets).astype(np.int32)
  dense = xs.toarray()
  return np.stack([np.argmax(dense[:, o:o + s], axis=1)
                   for o, s in zip(offsets, sizes)], axis=1).astype(np.int32)


def _constant(y: np.ndarray) -> Optional[Scorer]:
  """A +-30 scorer if `y` has one class (sklearn refuses to fit it)."""
  if y.min() == y.max():
    value = float(np.sign(y[0] - 0.5) * 30.0)
    return lambda xt: np.full(xt.shape[0], value)
  return None


def _sk_logistic(l2: float) -> Callable:
  """sklearn LogisticRegression with C = 1 / (N l2): our objective."""
  def fit(x, y, sizes):
    from sklearn.linear_model import LogisticRegression

    del sizes
    y = np.asarray(y, dtype=np.float64)
    fixed = _constant(y)
    if fixed is not None:
      return fixed
    model = LogisticRegression(C=1.0 / (x.shape[0] * l2), max_iter=1000,
                               tol=1e-6)
    model.fit(x, y)
    return model.decision_function
  return fit


def _sk_naive_bayes(x, y, sizes):
  """sklearn CategoricalNB on the codes (Laplace smoothing 1)."""
  from sklearn.naive_bayes import CategoricalNB

  y = np.asarray(y, dtype=np.float64)
  fixed = _constant(y)
  if fixed is not None:
    return fixed
  model = CategoricalNB(alpha=1.0, min_categories=np.asarray(sizes))
  model.fit(_codes(x, sizes), y)

  def scorer(xt):
    logp = model.predict_log_proba(_codes(xt, sizes))
    return logp[:, 1] - logp[:, 0]
  return scorer


def _sk_boosting(x, y, sizes):
  """sklearn HistGradientBoostingClassifier on the codes (categorical)."""
  from sklearn.ensemble import HistGradientBoostingClassifier

  y = np.asarray(y, dtype=np.float64)
  fixed = _constant(y)
  if fixed is not None:
    return fixed
  from threadpoolctl import threadpool_limits  # a scikit-learn dependency

  categorical = np.asarray(sizes) <= 255  # sklearn's limit per feature
  model = HistGradientBoostingClassifier(
      max_iter=100, categorical_features=categorical, early_stopping=False,
      random_state=0)
  # One OpenMP thread: on a busy machine more threads spin-wait (12x slower
  # on a loaded 2-core host), and 100k rows x 50 codes take seconds alone.
  with threadpool_limits(1, user_api="openmp"):
    model.fit(_codes(x, sizes), y)

  def scorer(xt):
    with threadpool_limits(1, user_api="openmp"):
      return model.decision_function(_codes(xt, sizes))
  return scorer


SKLEARN_MODELS: tuple[Classifier, ...] = (
    Classifier("logistic (l2=1e-4)", _sk_logistic(1e-4)),
    Classifier("logistic (l2=1e-2)", _sk_logistic(1e-2)),
    Classifier("logistic (l2=1)", _sk_logistic(1.0)),
    Classifier("naive Bayes", _sk_naive_bayes),
    Classifier("nearest centroid", _nearest_centroid),
    Classifier("gradient boosting", _sk_boosting),
)
"""The utility models with scikit-learn (nearest centroid is ours)."""


def utility_models(backend: str = "auto"
                   ) -> tuple[tuple[Classifier, ...], str]:
  """The utility models and a description of the backend.

  Args:
    backend: "auto" (scikit-learn if installed, else ours), "sklearn" or
      "numpy" (ours).

  Returns:
    (models, description), e.g. "scikit-learn 1.5.2: LogisticRegression,
    CategoricalNB, HistGradientBoostingClassifier; nearest centroid".

  Raises:
    ValueError: unknown backend, or "sklearn" without scikit-learn.
  """
  if backend not in ("auto", "sklearn", "numpy"):
    raise ValueError(f"backend must be 'auto', 'sklearn' or 'numpy', got "
                     f"{backend!r}")
  version = sklearn_version() if backend != "numpy" else None
  if backend == "sklearn" and version is None:
    raise ValueError("scikit-learn is not installed; install the evaluate "
                     "extra: pip install 'jtwin[evaluate]'")
  if version is not None:
    return SKLEARN_MODELS, (
        f"scikit-learn {version} (LogisticRegression, CategoricalNB, "
        "HistGradientBoostingClassifier; nearest centroid: jtwin)")
  why = (" (scikit-learn not installed)" if backend == "auto" else "")
  return MODELS, ("jtwin's NumPy classifiers (logistic regression, naive "
                  "Bayes, nearest centroid, boosted stumps)" + why)


def fit_one_vs_rest(model: Classifier, x: np.ndarray, y: np.ndarray,
                    num_classes: int, sizes: Sequence[int]
                    ) -> Callable[[np.ndarray], np.ndarray]:
  """Fits `model` for every class; returns a scorer of shape [N, K] (K > 2)
  or [N] (K = 2, the score of class 1)."""
  if num_classes == 2:
    return model.fit(x, (y == 1).astype(np.float64), sizes)
  scorers = [model.fit(x, (y == k).astype(np.float64), sizes)
             for k in range(num_classes)]
  return lambda xt: np.stack([s(xt) for s in scorers], axis=1)
