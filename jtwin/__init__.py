"""jtwin: differentially private synthetic twins of tabular data in pure JAX."""
__version__ = "0.1.0"
