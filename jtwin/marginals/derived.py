"""Columns declared as a function of another (`determined_by` in the model file).

A code and its label (Adult's education_num and education), a zip code and
its state: when the model file declares `child : ... ; determined_by =
parent` (public schema knowledge), the marginal method leaves the child out
of the mixture and derives it when decoding. A mixture cannot keep such a
pair exactly coupled under DP: every other noisy table that contains either
column pulls the two apart (on Adult at epsilon = 1, 11% of the twin's rows
got an education_num that did not match their education).

The map itself is learned under DP from one noisy table, parent base cell x
child cell (the missing cell included on both sides): each parent cell maps
to the child cell with the largest noisy count. That table replaces the
child's 1-way table, so the child costs one table instead of one per clique
it would have been in. Everything here is post-processing of that table.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np

__all__ = ["DerivedColumn", "learn_map", "off_map_share", "warn_unused_by_dp_vi"]


@dataclasses.dataclass(frozen=True)
class DerivedColumn:
  """A column decoded as a function of another (public once learned).

  Attributes:
    name: the column.
    parent: the column it is a function of (a modelled column).
    cells: its `jtwin.marginals.cells.CellColumn` (singleton groups).
    mapping: child cell (its missing cell is `cells.num_base`) per parent
      base cell, the parent's missing cell last where it has one.
    position: its index among the model file's columns (output order).
  """
  name: str
  parent: str
  cells: object
  mapping: tuple
  position: int

  def child_codes(self, parent_base: np.ndarray) -> np.ndarray:
    """Child cells [N] from the parent's base cells [N] (missing: `num_base`)."""
    return np.asarray(self.mapping, np.int64)[np.asarray(parent_base, np.int64)]

  def to_dict(self) -> dict:
    return {"name": self.name, "parent": self.parent, "cells": self.cells.to_dict(),
            "mapping": [int(m) for m in self.mapping], "position": int(self.position)}

  @classmethod
  def from_dict(cls, d: dict) -> "DerivedColumn":
    from jtwin.marginals.cells import CellColumn
    return cls(d["name"], d["parent"], CellColumn.from_dict(d["cells"]),
               tuple(int(m) for m in d["mapping"]), int(d["position"]))


def learn_map(noisy: np.ndarray) -> tuple:
  """Each parent cell's most frequent child cell in a noisy table.

  Args:
    noisy: float [parent cells, child cells] noisy counts.

  Returns:
    a tuple of child cell indices, one per parent cell.
  """
  return tuple(int(i) for i in np.argmax(np.asarray(noisy, float), axis=1))


def off_map_share(noisy: np.ndarray, mapping, sigma: float) -> tuple[float, float]:
  """Share of rows whose child differs from the map, and that share's noise sd.

  Args:
    noisy: float [parent cells, child cells] noisy counts (sd `sigma` each).
    mapping: `learn_map(noisy)`.
    sigma: the table's noise sd.

  Returns:
    (share, sd): the noisy off-map count over the noisy total, and the sd of
    the off-map count's noise over that total (the argmax picks the largest
    cell of each row, so on a true function the share is slightly negative
    in expectation).
  """
  noisy = np.asarray(noisy, float)
  total = max(noisy.sum(), 1.0)
  on = noisy[np.arange(noisy.shape[0]), np.asarray(mapping)].sum()
  off_cells = noisy.size - noisy.shape[0]
  return float((total - on) / total), float(sigma * np.sqrt(max(off_cells, 1)) / total)


def warn_unused_by_dp_vi(spec) -> None:
  """DP-VI (`jtwin fit`) models `determined_by` columns like any other: say so."""
  names = [f.name for f in spec.features if f.determined_by]
  if names:
    warnings.warn(f"'determined_by' is used by 'jtwin napsumq' only; DP-VI ('jtwin fit') "
                  f"models {', '.join(repr(n) for n in names)} like any other column",
                  stacklevel=3)
