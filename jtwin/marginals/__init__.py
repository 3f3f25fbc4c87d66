"""The marginal-query method's parts: cells, measurements, the mixture's
closed-form marginals, the noise-aware fit and private selection. The entry
point is `jtwin.napsumq.fit_marginals`."""
