"""Findings of the fourth bad-input audit (fourteenth session): `jtwin napsumq`,
`jtwin evaluate`, streaming and checkpoints. Each test runs the command that
went wrong and checks the one-line error, the exit code and what was (not)
written."""
import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from _cli_run import one_error, outputs, run

MODEL = ("a : Categorical ; categories = p, q, r ; missing = no\n"
         "b : Bernoulli ; categories = x, y ; missing = no\n"
         "c : Categorical ; bins = 0, 10, 20, 30, 40, 50, 60, 70, 80 ; integer ; missing = no\n")
NQ = ["--k", "3", "--steps", "30", "--ensemble", "1", "--visualize", "none", "--seed", "1"]
FT = ["--k", "2", "-e", "2", "-q", "0.1", "--visualize", "none", "--seed", "1"]


def _frame(n=400, seed=0):
  rng = np.random.default_rng(seed)
  return pd.DataFrame({"a": rng.choice(["p", "q", "r"], n), "b": rng.choice(["x", "y"], n),
                       "c": rng.integers(0, 80, n)})


@pytest.fixture
def files(tmp_path):
  _frame().to_csv(tmp_path / "data.csv", index=False)
  (tmp_path / "model.txt").write_text(MODEL)
  return tmp_path


@pytest.mark.parametrize("command,extra", [("napsumq", NQ + ["--m", "2", "--n", "6"]),
                                           ("fit", FT + ["--n", "3"])])
def test_separate_output_never_overwrites_the_input(files, capsys, command, extra):
  data = files / "out.1.csv"
  _frame().to_csv(data, index=False)
  before = data.read_bytes()
  code, _, err = run([command, str(data), str(files / "model.txt"), str(files / "out"),
                      "--separate_output"] + extra, capsys)
  assert code == 1
  assert one_error(err).endswith(f"{data}: refusing to overwrite the input file '{data}' "
                                 "(--separate_output writes OUTPUT_PREFIX.{i}.csv); choose a "
                                 "different output prefix")
  assert data.read_bytes() == before
  assert outputs(files) == ["out.1.csv"]


def test_separate_output_names_files_left_by_an_earlier_run(files, capsys):
  for i in range(5):
    (files / f"out.{i}.csv").write_text("old\n")
  code, _, err = run(["napsumq", str(files / "data.csv"), str(files / "model.txt"),
                      str(files / "out"), "--separate_output", "--m", "3", "--n", "6"] + NQ,
                     capsys)
  assert code == 0, err
  assert (f"{files / 'out'}.2.csv, {files / 'out'}.3.csv, {files / 'out'}.4.csv: left from "
          "an earlier run") in err
  assert (files / "out.4.csv").read_text() == "old\n"         # never removed
  assert len(pd.read_csv(files / "out.1.csv")) == 3


def test_separate_output_with_one_row_per_draw_warns(files, capsys):
  code, _, err = run(["napsumq", str(files / "data.csv"), str(files / "model.txt"),
                      str(files / "out"), "--separate_output", "--n", "4"] + NQ, capsys)
  assert code == 0
  assert "--separate_output with --m 1 writes one file per row (4 files)" in err


def test_napsumq_stream_missing_value_in_a_missing_no_column_is_one_line(files, capsys):
  frame = _frame()
  frame.loc[7, "a"] = None
  frame.to_csv(files / "miss.csv", index=False)
  for stream in ("on", "off"):
    code, _, err = run(["napsumq", str(files / "miss.csv"), str(files / "model.txt"),
                        str(files / "out"), "--stream", stream, "--chunk_rows", "100"] + NQ,
                       capsys)
    assert code == 1
    assert one_error(err).endswith(f"{files / 'miss.csv'}:9: column 'a' is missing but "
                                   f"{files / 'model.txt'}:1 declares 'missing = no'; declare "
                                   "'missing' or drop incomplete rows (--drop_na)")
    assert outputs(files) == []


@pytest.mark.parametrize("select", ["all", "aim", "mst"])
def test_one_column_gets_the_whole_budget_with_every_selection(files, capsys, select):
  _frame()[["b"]].to_csv(files / "one.csv", index=False)
  (files / "one.txt").write_text("b : Bernoulli ; categories = x, y ; missing = no\n")
  code, out, err = run(["napsumq", str(files / "one.csv"), str(files / "one.txt"),
                        str(files / "out"), "--select", select] + NQ, capsys)
  assert code == 0, err
  assert "(epsilon = 1.0000, target 1," in out          # not 0.6: nothing left unspent
  assert len(pd.read_csv(files / "out.csv")) > 0


@pytest.mark.parametrize("select", ["none", "mst"])
def test_target_without_effect_is_said(files, capsys, select):
  (files / "q.txt").write_text("a, b\n")
  code, _, err = run(["napsumq", str(files / "data.csv"), str(files / "model.txt"),
                      str(files / "out"), "--queries", str(files / "q.txt"), "--select", select,
                      "--target", "b"] + NQ, capsys)
  assert code == 0
  assert f"--target 'b' has no effect with --select {select}" in err


def test_select_none_without_queries_is_refused_before_reading_the_data(files, capsys):
  code, _, err = run(["napsumq", str(files / "nope.csv"), str(files / "model.txt"),
                      str(files / "out"), "--select", "none"] + NQ, capsys)
  assert code == 1                  # the data file does not even exist: not read
  assert one_error(err).endswith("pass --queries FILE (or a query file as MODEL), or choose "
                                 "another --select")


@pytest.mark.parametrize("query,message", [
    ("a, b, d, a, b\n", None),      # repeated names: a 3-column clique, fine
    ("a, b, d, b, q2\n", "column 'q2' is not in the data"),
])
def test_query_file_cliques(files, capsys, query, message):
  rng = np.random.default_rng(0)
  pd.DataFrame({x: rng.choice(["u", "v"], 3000) for x in "abd"}).to_csv(
      files / "cat.csv", index=False)
  (files / "q.txt").write_text(query)
  code, _, err = run(["napsumq", str(files / "cat.csv"), str(files / "q.txt"),
                      str(files / "out")] + NQ, capsys)
  if message is None:
    assert code == 0, err
  else:
    assert code == 3 and message in one_error(err)


def test_query_file_messages_name_the_file_its_role_and_line(files, capsys):
  wide = pd.DataFrame({x: np.resize(["u", "v"], 50) for x in "abcdefg"})
  wide.to_csv(files / "wide.csv", index=False)
  (files / "long.txt").write_text("# cliques\na, b\na, b, c, d\n")
  code, _, err = run(["napsumq", str(files / "wide.csv"), str(files / "long.txt"),
                      str(files / "out")] + NQ, capsys)
  assert code == 3
  assert one_error(err).endswith(f"{files / 'long.txt'}:3: the clique has 4 columns; jtwin "
                                 "measures cliques of at most 3 columns: split it into "
                                 "cliques of 3 or fewer")
  (files / "q.txt").write_text("a, zz\n")
  code, _, err = run(["napsumq", str(files / "data.csv"), str(files / "model.txt"),
                      str(files / "out"), "--queries", str(files / "q.txt")] + NQ, capsys)
  assert code == 3 and one_error(err).endswith(
      f"{files / 'q.txt'}:1: column 'zz' is not in the model file; check the spelling")
  for path, needle in ((files / "missing.txt", "query file (--queries) not found"),
                       (files, "is a directory, not a query file (--queries)")):
    code, _, err = run(["napsumq", str(files / "data.csv"), str(files / "model.txt"),
                        str(files / "out"), "--queries", str(path)] + NQ, capsys)
    assert code == 3 and needle in one_error(err)
  (files / "bad.txt").write_bytes(b"a, b\nc, \xe9\n")
  code, _, err = run(["napsumq", str(files / "data.csv"), str(files / "bad.txt"),
                      str(files / "out")] + NQ, capsys)
  assert code == 3 and "not UTF-8 text (invalid continuation byte at line 2" in one_error(err)
  assert outputs(files) == []


def test_binned_column_with_a_word_says_it_is_binned(files, capsys):
  frame = _frame()
  frame["c"] = frame["c"].astype(object)
  frame.loc[3, "c"] = "abc"
  frame.to_csv(files / "word.csv", index=False)
  code, _, err = run(["fit", str(files / "word.csv"), str(files / "model.txt"),
                      str(files / "out")] + FT, capsys)
  assert code == 1
  assert one_error(err).endswith(f"{files / 'word.csv'}:5: column 'c' has the non-numeric "
                                 "value 'abc', but the model file declares it binned ('bins "
                                 "= ...': a numeric column); fix the value, or remove 'bins' "
                                 "to model its values as categories")


# ------------------------------------------------------------------ evaluate


@pytest.fixture
def tables(files):
  real, synth = _frame(300, 1), _frame(300, 2)
  real.to_csv(files / "real.csv", index=False)
  synth.to_csv(files / "syn.csv", index=False)
  return files


def test_evaluate_refuses_a_folder_as_report_prefix(tables, capsys):
  code, _, err = run(["evaluate", str(tables / "real.csv"), str(tables / "syn.csv"), "-o",
                      str(tables) + os.sep], capsys)
  assert code == 1 and "names a directory" in one_error(err)
  assert not (tables / ".json").exists() and not (tables / ".html").exists()


def test_evaluate_refuses_the_result_of_another_twin(tables, capsys):
  (tables / "one.txt").write_text("b : Bernoulli ; categories = x, y ; missing = no\n")
  assert run(["napsumq", str(tables / "data.csv"), str(tables / "one.txt"),
              str(tables / "other")] + NQ, capsys)[0] == 0
  code, _, err = run(["evaluate", str(tables / "real.csv"), str(tables / "syn.csv"),
                      "--result", str(tables / "other.jtwin.npz")], capsys)
  assert code == 1
  assert one_error(err).endswith(f"{tables / 'other.jtwin.npz'}: this result was fitted on "
                                 f"the columns b, not those of {tables / 'syn.csv'}; pass "
                                 "the result file of this twin with --result")
  # the result of this twin is accepted and its epsilon goes into the report
  assert run(["napsumq", str(tables / "data.csv"), str(tables / "model.txt"),
              str(tables / "mine")] + NQ, capsys)[0] == 0
  code, _, err = run(["evaluate", str(tables / "real.csv"), str(tables / "mine.csv"),
                      "--result", str(tables / "mine.jtwin.npz"), "-o", str(tables / "rep")],
                     capsys)
  assert code == 0, err
  report = json.loads((tables / "rep.json").read_text())
  assert 0.99 < report["report"]["privacy"]["epsilon"] <= 1


def test_evaluate_empty_test_file_and_missing_target_are_one_line(tables, capsys):
  (tables / "head.csv").write_text("a,b,c\n")
  code, _, err = run(["evaluate", str(tables / "real.csv"), str(tables / "syn.csv"), "--test",
                      str(tables / "head.csv"), "--target", "b"], capsys)
  assert code == 1
  assert one_error(err).endswith(f"{tables / 'head.csv'}: the test data file has a header "
                                 "but no rows")
  _frame(300, 2).assign(b=None).to_csv(tables / "nob.csv", index=False)
  code, _, err = run(["evaluate", str(tables / "real.csv"), str(tables / "nob.csv"),
                      "--target", "b"], capsys)
  assert code == 1
  assert one_error(err).endswith("the synthetic rows have no value in the target column 'b' "
                                 "(every cell is missing)")
  assert "Mean of empty slice" not in err


def test_evaluate_one_class_real_target_has_no_ranking_agreement(tables, capsys):
  _frame(300, 1).assign(b="x").to_csv(tables / "oneclass.csv", index=False)
  code, out, err = run(["evaluate", str(tables / "oneclass.csv"), str(tables / "syn.csv"),
                        "--target", "b"], capsys)
  assert code == 0
  assert "one class of 'b' only" in err
  line = next(l for l in out.splitlines() if l.startswith("synthetic ranking agreement"))
  assert "n/a" in line


def test_ranking_agreement_leaves_out_undefined_scores():
  from jtwin.evaluate.metrics import synthetic_ranking_agreement as sra
  assert np.isnan(sra([np.nan, np.nan], [0.7, 0.8]))
  assert sra([0.6, np.nan, 0.8], [0.5, 0.9, 0.7]) == 1.0
  assert sra([0.6, 0.7, 0.8], [0.8, 0.7, 0.6]) == 0.0


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_directory_must_be_private(files, capsys):
  data, model, out = str(files / "data.csv"), str(files / "model.txt"), str(files / "out")
  full = files / "full"
  full.mkdir()
  (full / "notes.txt").write_text("mine")
  code, _, err = run(["fit", data, model, out, "--checkpoint", str(full)] + FT, capsys)
  assert code == 1 and "is not empty; the checkpoint holds the run's secret key" in one_error(err)
  code, _, err = run(["fit", data, model, out, "--checkpoint", str(files)] + FT, capsys)
  assert code == 1 and "is the output folder" in one_error(err)
  assert outputs(files) == []
  empty = files / "empty"
  empty.mkdir(mode=0o755)
  code, _, err = run(["fit", data, model, out, "--checkpoint", str(empty)] + FT, capsys)
  assert code == 0, err
  assert stat.S_IMODE(os.stat(empty).st_mode) == 0o700
  assert (empty / "checkpoint.json").exists()


def test_an_edited_checkpoint_position_is_refused(files, capsys):
  data, model, out = str(files / "data.csv"), str(files / "model.txt"), str(files / "out")
  ck = files / "ck"
  args = ["fit", data, model, out, "--checkpoint", str(ck), "--checkpoint_every", "1"] + FT
  assert run(args, capsys)[0] == 0
  assert run(args + ["--resume"], capsys)[0] == 0          # an unedited one resumes
  meta = json.loads((ck / "checkpoint.json").read_text())
  meta["steps_done"] = 5
  meta["position"]["chunk"] = 1
  (ck / "checkpoint.json").write_text(json.dumps(meta))
  code, _, err = run(args + ["--resume"], capsys)
  assert code == 1
  assert "the checkpoint's position (steps done, key) does not match its state" in one_error(err)


def test_checkpoint_directory_needs_its_parent_and_a_readable_checkpoint(files, capsys):
  data, model, out = str(files / "data.csv"), str(files / "model.txt"), str(files / "out")
  deep = files / "nope" / "deeper"
  code, _, err = run(["fit", data, model, out, "--checkpoint", str(deep)] + FT, capsys)
  assert code == 1 and "its parent folder" in one_error(err) and "does not exist" in err
  assert not (files / "nope").exists()
  torn = files / "torn"
  torn.mkdir()
  (torn / "state-000002.npz").write_bytes(b"x")
  code, _, err = run(["fit", data, model, out, "--checkpoint", str(torn), "--resume"] + FT,
                     capsys)
  assert code == 1
  assert "holds checkpoint state files but no checkpoint.json" in one_error(err)


# ------------------------------------------------------------------ short rows


@pytest.mark.parametrize("name,body,found", [
    ("crlf", b"a,b,c\r\n1,2,3\r\n\r\n4,5\r\n", (4, 2, 3)),
    ("cut off", b"a,b,c\n1,2,3\n4,5", (3, 2, 3)),
    ("complete without a final line break", b"a,b,c\n1,2,3\n4,5,6", None),
    ("blank lines", b"a,b,c\n1,2,3\n\n\n4,5,6\n", None),
    ("empty fields", b"a,b,c\n,,\n1,,\n", None),
    ("quoted comma and line break", b'a,b,c\n"x,y",2,3\n"p\nq",5\n', (4, 2, 3)),
    ("quoted, complete", b'a,b,c\n"x,y",2,3\n"p\nq",5,6\n', None),
    ("byte order mark", b"\xef\xbb\xbfa,b,c\n1,2,3\n1,2\n", (3, 2, 3)),
])
@pytest.mark.parametrize("block", [7, 1 << 23])
def test_short_row_finds_the_first_row_with_too_few_fields(tmp_path, monkeypatch, name, body,
                                                           found, block):
  from jtwin import data
  monkeypatch.setattr(data, "SCAN_BLOCK", block)     # block boundaries inside lines
  path = tmp_path / "x.csv"
  path.write_bytes(body)
  assert data.short_row(path) == found
  import gzip
  gz = tmp_path / "x.csv.gz"
  gz.write_bytes(gzip.compress(body))
  assert data.short_row(gz) == found


@pytest.mark.parametrize("command,extra", [
    ("fit", FT + ["--stream", "off"]), ("fit", FT + ["--stream", "on", "--chunk_rows", "50"]),
    ("napsumq", NQ + ["--stream", "on", "--chunk_rows", "50"]), ("napsumq", NQ),
    ("check", [])])
def test_a_row_with_too_few_fields_is_one_line_on_every_path(files, capsys, command, extra):
  text = (files / "data.csv").read_text().splitlines()
  text[200] = text[200].rsplit(",", 1)[0]          # line 201: the last field lost
  (files / "cut.csv").write_text("\n".join(text) + "\n")
  code, _, err = run([command, str(files / "cut.csv"), str(files / "model.txt")]
                     + ([str(files / "out")] if command != "check" else []) + extra, capsys)
  assert code == 1
  assert one_error(err).endswith(f"{files / 'cut.csv'}:201: the row has 2 field(s), the "
                                 "header 3; every row needs as many fields as the header (a "
                                 "file cut off mid-line, or a lost comma?)")
  assert outputs(files) == []


def test_evaluate_refuses_a_cut_off_synthetic_file(files, capsys):
  _frame().to_csv(files / "real.csv", index=False)
  (files / "syn.csv").write_text((files / "real.csv").read_text() + "q,x")   # a cut last row
  code, _, err = run(["evaluate", str(files / "real.csv"), str(files / "syn.csv")], capsys)
  assert code == 1 and "the row has 2 field(s), the header 3" in one_error(err)


def test_chunk_rows_without_streaming_is_said_to_be_ignored(files, capsys):
  code, _, err = run(["napsumq", str(files / "data.csv"), str(files / "model.txt"),
                      str(files / "out"), "--stream", "off", "--chunk_rows", "50"] + NQ, capsys)
  assert code == 0
  assert "--chunk_rows 50 is ignored: this run reads the whole file at once" in err
  code, _, err = run(["napsumq", str(files / "data.csv"), str(files / "model.txt"),
                      str(files / "out2"), "--stream", "on", "--chunk_rows", "50"] + NQ, capsys)
  assert code == 0 and "--chunk_rows" not in err


def test_a_repeated_column_in_a_clique_is_said(files, capsys):
  (files / "q.txt").write_text("a, a\nb, a, b\n")
  code, _, err = run(["napsumq", str(files / "data.csv"), str(files / "model.txt"),
                      str(files / "out"), "--queries", str(files / "q.txt")] + NQ, capsys)
  assert code == 0
  assert (f"{files / 'q.txt'}:1: column 'a' appears more than once in the clique; it is the "
          "clique (a), a 1-way table, which is measured anyway") in err
  assert f"{files / 'q.txt'}:2: column 'b' appears more than once in the clique; it is the " \
         "clique (b, a)" in err


def test_evaluate_holds_the_files_to_the_model_files_declarations(tables, capsys):
  (tables / "other.txt").write_text(MODEL.replace("categories = x, y", "categories = yes, no"))
  code, _, err = run(["evaluate", str(tables / "real.csv"), str(tables / "syn.csv"), "--model",
                      str(tables / "other.txt")], capsys)
  assert code == 0
  assert (f"{tables / 'real.csv'}: column 'b' has 2 label(s) ('x', 'y') that "
          f"{tables / 'other.txt'} does not declare (categories = yes, no)") in err
  code, _, err = run(["evaluate", str(tables / "real.csv"), str(tables / "syn.csv"), "--model",
                      str(tables / "model.txt")], capsys)
  assert code == 0 and "does not declare" not in err
  synth = pd.read_csv(tables / "syn.csv").astype({"c": object})
  synth.loc[4, "c"] = "abc"
  synth.to_csv(tables / "word.csv", index=False)
  code, _, err = run(["evaluate", str(tables / "real.csv"), str(tables / "word.csv"), "--model",
                      str(tables / "model.txt")], capsys)
  assert code == 1
  assert one_error(err).endswith(f"{tables / 'word.csv'}:6: column 'c' has the non-numeric "
                                 f"value 'abc', but {tables / 'model.txt'} declares it numeric; "
                                 "fix the file or the model file")


def test_evaluate_of_wide_tables_samples_pairs_and_leaves_out_the_matrices(tmp_path, monkeypatch,
                                                                          capsys):
  from jtwin.evaluate import core
  from jtwin.evaluate import evaluate
  rng = np.random.default_rng(0)
  real = pd.DataFrame({f"c{i}": rng.choice(["a", "b", "c"], 80) for i in range(20)})
  synth = pd.DataFrame({f"c{i}": rng.choice(["a", "b", "c"], 80) for i in range(20)})
  full = evaluate(real, synth)
  assert full["tvd_2way_num_pairs"] == 190
  assert np.isfinite(np.asarray(full["association"]["cramers_v_real"], float)).all()
  sampled = evaluate(real, synth, max_marginal_pairs=50)
  assert sampled["tvd_2way_num_pairs"] == 50
  v = np.asarray(sampled["association"]["cramers_v_real"], float)
  assert np.isfinite(v[np.triu_indices(20, 1)]).sum() == 50      # the sampled pairs only
  assert np.isfinite(sampled["cramers_v_diff_mean"])
  monkeypatch.setattr(core, "MAX_MATRIX_COLUMNS", 10)
  real.to_csv(tmp_path / "r.csv", index=False)
  synth.to_csv(tmp_path / "s.csv", index=False)
  code, _, err = run(["evaluate", str(tmp_path / "r.csv"), str(tmp_path / "s.csv"), "-o",
                      str(tmp_path / "rep")], capsys)
  assert code == 0, err
  report = json.loads((tmp_path / "rep.json").read_text())
  assert "cramers_v_real" not in report["association"]
  assert "left out of the report above 10 columns" in report["association"]["omitted"]
  assert "left out of the report" in (tmp_path / "rep.html").read_text()


def test_an_interrupted_report_leaves_no_file(tmp_path, monkeypatch):
  from jtwin.evaluate import evaluate, report
  real = _frame(100, 1)
  results = evaluate(real, _frame(100, 2))

  def stop(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(report, "_html", stop)      # interrupted while drawing the figures
  with pytest.raises(KeyboardInterrupt):
    report.write_report(results, real, _frame(100, 2), str(tmp_path / "rep"))
  assert list(tmp_path.iterdir()) == []
