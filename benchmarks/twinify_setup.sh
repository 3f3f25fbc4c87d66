#!/usr/bin/env bash
# Installs twinify 2.0.0 into its own virtual environment, for
# benchmarks/bench_vs_twinify.py only. twinify is NEVER a jtwin dependency.
#
# Usage: bash benchmarks/twinify_setup.sh [VENV_DIR]
#   VENV_DIR defaults to $TWINIFY_VENV, else /tmp/twinify_venv.
#
# The pin set is the one that installs and runs on Python 3.11 (see
# shared/notes/twinify_reference_run.md): twinify 2.0.0 imports
# jax.config.config and jax.experimental.host_callback, so it needs an old
# JAX (0.4.13 is the oldest with Python 3.11 wheels); newer scipy breaks
# jax 0.4.13 (scipy.linalg.tril), newer arviz/matplotlib break `import
# twinify`. Exit status: 0 when `VENV_DIR/bin/twinify` works, non-zero
# otherwise (e.g. no network to reach the package index).
set -euo pipefail
VENV="${1:-${TWINIFY_VENV:-/tmp/twinify_venv}}"
PY="${PYTHON:-python3}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import twinify" 2>/dev/null; then
  echo "twinify already installed in $VENV"
  exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet \
    twinify==2.0.0 d3p==0.2.0 numpyro==0.10.1 jax==0.4.13 jaxlib==0.4.13 \
    scipy==1.11.4 ml_dtypes==0.2.0 arviz==0.14.0 matplotlib==3.7.5 xarray==2023.6.0
"$VENV/bin/python" -c "import twinify, jax; print('twinify', twinify.__version__ if hasattr(twinify, '__version__') else '2.0.0', 'jax', jax.__version__)"
echo "twinify installed in $VENV: $VENV/bin/twinify"
