"""A custom jtwin model in plain JAX: a diagonal Gaussian over numeric columns.

Run it with the command line (numeric columns of the bundled Adult data):

    jtwin fit jtwin/examples/adult.csv.gz jtwin/examples/custom_model.py out/custom

or from Python:

    import jax, jtwin
    from jtwin.examples import custom_model
    model = custom_model.make_model(["age", "hours_per_week"])
    result = jtwin.fit(jax.random.key(0), model, (values, observed), epsilon=1.0)

The file defines `make_model(columns) -> jtwin.models.Model` and, as twinify
allows, `preprocess(df)` / `postprocess(df)`. Everything the DP trainer needs
is in the `Model`: `init`, `log_prior`, a per-example `log_likelihood`, and
`sample`. Parameters live in unconstrained space (here: mean and log standard
deviation per column), and `log_prior` is the density of those unconstrained
parameters.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from jtwin.models import Model

# Public scales for standardising (declared, not computed from the data).
COLUMNS = {"age": (17.0, 90.0), "hours_per_week": (1.0, 99.0)}


def preprocess(df):
  """Keeps the declared numeric columns, scaled by PUBLIC bounds to about [-1, 1]."""
  out = df[list(COLUMNS)].astype(float)
  for name, (lo, hi) in COLUMNS.items():
    out[name] = (out[name].clip(lo, hi) - (lo + hi) / 2) / ((hi - lo) / 2)
  return out


def postprocess(df):
  """Maps synthetic rows back to the original scale (integers)."""
  out = df.copy()
  for name, (lo, hi) in COLUMNS.items():
    x = out[name] * ((hi - lo) / 2) + (lo + hi) / 2
    out[name] = np.round(np.clip(x, lo, hi)).astype("Int64")
  return out


def make_model(columns):
  d = len(columns)

  def init(key):
    return {"loc": jnp.zeros(d), "log_scale": jnp.zeros(d)}

  def log_prior(theta):
    return jnp.sum(norm.logpdf(theta["loc"], 0.0, 3.0)) + jnp.sum(norm.logpdf(theta["log_scale"], 0.0, 2.0))

  def log_likelihood(theta, x, observed):
    """One example: x [d] (any finite placeholder where missing), observed bool [d]."""
    lp = norm.logpdf(x, theta["loc"], jnp.exp(theta["log_scale"]))
    return jnp.sum(jnp.where(observed, lp, 0.0))

  def sample(key, theta, n):
    x = theta["loc"] + jnp.exp(theta["log_scale"]) * jax.random.normal(key, (n, d))
    return x, jnp.ones((n, d), bool)

  return Model(init=init, log_prior=log_prior, log_likelihood=log_likelihood, sample=sample)
