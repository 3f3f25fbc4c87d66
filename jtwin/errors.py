"""Exceptions that mean "the user's input is wrong", as opposed to a bug.

The command line prints these as one line (no traceback) and exits non-zero.
"""


class JtwinInputError(ValueError):
  """Bad user input: a data file, model file or option. The message is one line
  naming the file, line or column and what to do."""


class ModelFileError(JtwinInputError):
  """A syntax or content error in a model file."""


class DataError(JtwinInputError):
  """The data do not fit the model file (unknown column, bad values, ...)."""


class NonFiniteError(RuntimeError):
  """Training produced non-finite parameters or loss."""


class UnsafeDeltaError(JtwinInputError):
  """delta > 1/N without `allow_large_delta` (the command line exits with 4)."""


class UnsafeEpsilonError(JtwinInputError):
  """epsilon above `jtwin._guidance.MAX_EPSILON` without
  `allow_large_epsilon` (the command line exits with 4)."""
