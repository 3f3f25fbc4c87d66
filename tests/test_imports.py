"""Module structure: no import cycles between jtwin modules (local imports count)."""
import ast
import os

import jtwin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(jtwin.__file__)))


def _import_graph():
  mods = {}
  for dirpath, _, names in os.walk(os.path.join(ROOT, "jtwin")):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(dirpath, name)
        mod = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        mods[mod[:-len(".__init__")] if mod.endswith(".__init__") else mod] = path
  graph = {}
  for mod, path in mods.items():
    deps = set()
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):        # module-level and local imports alike
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jtwin"):
        subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods]
        deps.update(subs)
        if len(subs) < len(node.names):
          deps.add(node.module)
      elif isinstance(node, ast.Import):
        deps.update(a.name for a in node.names if a.name.startswith("jtwin"))
    graph[mod] = {d for d in deps if d in mods and d != mod}
  return graph


def _cycles(graph):
  """Pairs of modules that import each other (a package and its own submodules aside)."""
  return {tuple(sorted((a, b))) for a in graph for b in graph[a]
          if a in graph.get(b, ()) and not b.startswith(a + ".") and not a.startswith(b + ".")}


def test_no_import_cycles_between_modules():
  cycles = _cycles(_import_graph())
  assert ("jtwin._commands", "jtwin.cli") not in cycles
  assert ("jtwin.models.mixture", "jtwin.models.mixture_grads") not in cycles
  assert not cycles, cycles


def test_unsafe_delta_error_lives_in_errors():
  from jtwin import cli, errors
  assert cli.UnsafeDeltaError is errors.UnsafeDeltaError     # old import path still works
