"""Runs a smartnoise-synth synthesizer on a categorical CSV (in its own venv).

  SNSYNTH_PYTHON _smartnoise_shim.py NAME EPSILON DELTA IN.csv OUT.csv N SEED

Every column is categorical (strings); categories are read from the data
with preprocessor_eps = 0, as smartnoise-synth does for categorical columns.
Prints "fit_s=..." on success.
"""
import sys
import time

import numpy as np
import pandas as pd
from snsynth import Synthesizer

name, eps, delta, src, dst, n, seed = sys.argv[1:8]
np.random.seed(int(seed))
df = pd.read_csv(src, dtype=str, keep_default_na=False)
t0 = time.perf_counter()
synth = Synthesizer.create(name, epsilon=float(eps), delta=float(delta), verbose=False)
synth.fit(df, preprocessor_eps=0.0, categorical_columns=list(df.columns))
synth.sample(int(n)).to_csv(dst, index=False)
print(f"fit_s={time.perf_counter() - t0:.1f}")
