"""jtwin: differentially private synthetic twins of tabular data, in pure JAX.

Public API (everything else is reached as `jtwin.models.*`,
`jtwin.accounting.*`, or is private):

  parse_model_file, read_csv, resolve_domain, encode, decode  -- data
  make_mixture_model, Model, Feature, MeanFieldParams           -- models
  fit, FitResult, PrivacyRecord                                 -- DP-VI
  sample_synthetic                                              -- sampling
  save_result, load_result                                      -- result files
  calibrate_noise, epsilon                                      -- accounting
  dp_aggregate                                                  -- DP-SGD noise as an optax transform
"""
__version__ = "0.1.0"

from jtwin import accounting, models
from jtwin.accounting import calibrate_noise, epsilon
from jtwin.data import decode, encode, read_csv, resolve_domain
from jtwin.dp import dp_aggregate
from jtwin.infer import FitResult, PrivacyRecord, fit
from jtwin.models import Feature, MeanFieldParams, Model, make_mixture_model
from jtwin.result_io import load_result, save_result
from jtwin.sampling import sample_synthetic
from jtwin.spec import parse_model_file

__all__ = [
    "FitResult", "Feature", "MeanFieldParams", "Model", "PrivacyRecord", "__version__",
    "accounting", "calibrate_noise", "decode", "dp_aggregate", "encode", "epsilon", "fit",
    "load_result", "make_mixture_model", "models", "parse_model_file", "read_csv",
    "resolve_domain", "sample_synthetic", "save_result",
]
