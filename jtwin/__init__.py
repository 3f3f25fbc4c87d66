"""jtwin: differentially private synthetic twins of tabular data, in pure JAX.

Public API (everything else is reached as `jtwin.models.*`,
`jtwin.accounting.*`, or is private):

  Synthesizer, load                                             -- high-level: fit(df), sample(n), save, load
  parse_model_file, read_csv, resolve_domain, encode, decode  -- data
  make_mixture_model, Model, Feature, MeanFieldParams           -- models
  fit, FitResult, PrivacyRecord                                 -- DP-VI
  fit_marginals, sample_marginals, MarginalResult, CsvSource    -- marginal queries (napsumq)
  rubin                                                         -- Rubin's rules
  sample_synthetic                                              -- sampling
  table_store                                                   -- data larger than memory (memmap)
  save_result, load_result, rebuild_result                      -- result files
  calibrate_noise, epsilon                                      -- accounting
  dp_aggregate                                                  -- DP-SGD noise as an optax transform

Names are imported lazily on first use, so `import jtwin` is instant and
`jtwin --help` does not start JAX.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "accounting": ("jtwin.accounting", None),
    "models": ("jtwin.models", None),
    "calibrate_noise": ("jtwin.accounting", "calibrate_noise"),
    "epsilon": ("jtwin.accounting", "epsilon"),
    "decode": ("jtwin.data", "decode"),
    "encode": ("jtwin.data", "encode"),
    "read_csv": ("jtwin.data", "read_csv"),
    "resolve_domain": ("jtwin.data", "resolve_domain"),
    "dp_aggregate": ("jtwin.dp", "dp_aggregate"),
    "FitResult": ("jtwin.infer", "FitResult"),
    "PrivacyRecord": ("jtwin.infer", "PrivacyRecord"),
    "fit": ("jtwin.synthesizer", "fit"),
    "Synthesizer": ("jtwin.synthesizer", "Synthesizer"),
    "load": ("jtwin.synthesizer", "load"),
    "fit_marginals": ("jtwin.napsumq", "fit_marginals"),
    "sample_marginals": ("jtwin.napsumq", "sample_marginals"),
    "MarginalResult": ("jtwin.napsumq", "MarginalResult"),
    "CsvSource": ("jtwin.marginals.streamed", "CsvSource"),
    "rubin": ("jtwin.rubin", None),
    "Feature": ("jtwin.models", "Feature"),
    "MeanFieldParams": ("jtwin.models", "MeanFieldParams"),
    "Model": ("jtwin.models", "Model"),
    "make_mixture_model": ("jtwin.models", "make_mixture_model"),
    "load_result": ("jtwin.result_io", "load_result"),
    "save_result": ("jtwin.result_io", "save_result"),
    "rebuild_result": ("jtwin.result_io", "rebuild"),
    "sample_synthetic": ("jtwin.sampling", "sample_synthetic"),
    "parse_model_file": ("jtwin.spec", "parse_model_file"),
    "table_store": ("jtwin.table_store", None),
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
  try:
    module, attr = _EXPORTS[name]
  except KeyError:
    raise AttributeError(f"module 'jtwin' has no attribute {name!r}") from None
  value = importlib.import_module(module)
  value = value if attr is None else getattr(value, attr)
  globals()[name] = value
  return value


def __dir__():
  return __all__
