"""`jtwin evaluate`: how good is a synthetic twin, before it is released?

`evaluate(real, synth, ...)` computes marginal fidelity (total variation
distances of 1-, 2- and 3-way marginals, missing rates), dependence
(Cramér's V and Pearson differences), distinguishability (propensity-score
MSE) and, given a target column, machine-learning utility (train on
synthetic, test on real; synthetic ranking agreement). `write_report` saves
the figures as JSON and a one-page HTML report.

Everything here reads the real data: the results are for the data holder,
not for release. NumPy, SciPy and pandas; matplotlib is imported by
`write_report` when it draws, and scikit-learn (the optional `evaluate`
extra) by the utility metrics when it is installed. Memory grows with rows x
columns, not with the number of distinct values: many-valued columns are
capped, designs are sparse, and the pMSE and utility models use at most
100,000 rows per table.
"""
from jtwin.evaluate.core import evaluate
from jtwin.evaluate.report import format_summary, write_report

__all__ = ["evaluate", "format_summary", "write_report"]
