"""bench/study.py, the runner of the studies, and bench/stats.py, their statistics. The runner's logic runs
in-process with ``execute`` replaced by a stand-in that writes the metrics.json a run would; one test (and the slow
ones) start real ``python run.py`` processes."""
import json
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import figures  # noqa: E402
import stats  # noqa: E402
import study  # noqa: E402

TINY = {"seeds": [0, 1], "vars": {"epochs": "1"},
        "outputs": {"threshold": ".hydra/config.yaml:module.collapse_threshold"},
        "stages": {"teacher": [{"label": "LeNet-5", "seeds": [0], "overrides": ["method=supervised", "model=lenet5",
                                                                                 "debug=tiny"]}],
                   "fit": [{"label": "KD", "overrides": ["method=kd", "debug=tiny", "trainer.max_epochs=${epochs}",
                                                          "callbacks.speed.throughput_batch=8",
                                                          "teacher.checkpoint=${run:teacher/LeNet-5}/checkpoints/last.ckpt"]},
                           {"label": "by labels", "overrides": ["method=supervised", "debug=tiny"]}],
                   "test": [{"label": "KD tested", "overrides": [
                       "method=kd", "debug=tiny", "train=false", "ckpt_path=${run:fit/KD}/checkpoints/last.ckpt",
                       "optimizer.lr=${metric:fit/KD:test/acc}",
                       "teacher.checkpoint=${run:teacher/LeNet-5}/checkpoints/last.ckpt"]}]},
        "table": {"stages": ["fit", "test"], "label": "method", "columns": [
            {"header": "test top-1 (%)", "metric": "test/acc", "scale": 100},
            {"header": "seeds", "metric": "test/acc", "agg": "n"},
            {"header": "- labels", "stat": "minus", "base": "fit/by labels"}]}}
DOC = "# Results\n\nintro\n\n<!-- study:tiny:start -->\nold table\n<!-- study:tiny:end -->\n\nreading, kept\n"


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A study file, its doc, and a stand-in for ``python run.py`` that records each call and writes metrics.json
    (test/acc 0.5 + 0.1 x seed, + 0.05 for KD; 36 s and a hundredth per earlier call, as no two real runs take the
    same time)."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text(DOC)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    calls = []

    def fake(args, folder, threads):
        calls.append((args, folder))
        seed = int(args[-1].split("=")[1])
        (folder / ".hydra").mkdir(parents=True, exist_ok=True)
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*args, *study.QUIET]))   # as Hydra does
        acc = 0.5 + 0.1 * seed + (0.05 if "method=kd" in args else 0)
        (folder / "metrics.json").write_text(json.dumps({"command": shlex.join(["python", "run.py", *args]),
                                                         "metrics": {"test/acc": acc},
                                                         "wall_time_s": 36.0 + 0.01 * len(calls)}))

    monkeypatch.setattr(study, "execute", fake)
    return lambda **kw: study.Study(str(path), root=tmp_path, **kw), calls, tmp_path


def test_runs_once_then_reads_records_and_the_table_regenerates_from_records_alone(tiny):
    make, calls, tmp = tiny
    s = make()
    outcomes = study.run_study(s, parallel=2)
    assert len(calls) == 1 + 2 + 2 + 2 and all(o.startswith("ran") for o in outcomes.values())
    text = study.table(s)
    assert "| fit: KD | 60.00 ± 7.07 | 2 | +5.00 ± 0.00 |" in text   # per seed: +5 and +5
    assert "| fit: by labels | 55.00 ± 7.07 | 2 |  |" in text
    assert "| test: KD tested | 60.00 ± 7.07 | 2 | +5.00 ± 0.00 |" in text
    assert "7 of 7 runs, 0.07 CPU hours" in text and "No record" not in text   # 7 x 36 s, one thread
    assert study.run_study(s) == {run: "recorded" for run in s.runs()} and len(calls) == 7   # cached
    copy = tmp / "elsewhere"
    shutil.copytree(tmp / "docs" / "records", copy)
    shutil.rmtree(tmp / "logs")
    assert study.table(make(records=copy)) == text   # no logs/ needed
    record = json.loads((copy / "tiny" / "fit" / "KD" / "seed1.json").read_text())
    assert record["overrides"][-1] == "seed=1" and record["cpu_h"] == 0.01 and record["command"].startswith("python")


def test_a_figure_is_drawn_from_the_records_with_the_curves_they_hold(tiny):
    """``figure: {draw: accuracy_against_time}``: docs/<study>.png once records exist, one line per seed of each table
    row holding a curve, at the logged times (minutes) and accuracies (%); none before any record."""
    make, _, tmp = tiny
    s = make()
    s.spec["figure"] = {"draw": "accuracy_against_time"}
    assert study.draw(s) is None and not (tmp / "docs" / "tiny.png").exists()
    study.run_study(s)
    assert study.draw(s) == tmp / "docs" / "tiny.png" and (tmp / "docs" / "tiny.png").stat().st_size > 1000
    records = {"fit/KD": [rec(0, 0, val_acc_curve=[0.5, 0.8], val_time_curve=[30.0, 90.0]),
                          rec(1, 0, val_acc_curve=[0.4])],   # no times logged: no line
               "fit/by labels": [rec(0, 0, val_acc_curve=[0.2, 0.3], val_time_curve=[60.0, 120.0])]}
    (ax,) = figures.accuracy_against_time(records, ["fit/KD", "fit/by labels"]).axes
    assert [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines] == [
        ([0.5, 1.5], [50.0, 80.0]), ([1.0, 2.0], [20.0, 30.0])]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["KD (1 seeds)", "by labels (1 seeds)"]
    records["fit/KD"][0]["metrics"]["teacher"] = 0.9   # a reference level: one dashed line at its mean, 90%
    (ax,) = figures.accuracy_against_time(records, ["fit/KD"], reference="teacher").axes
    assert [list(line.get_ydata()) for line in ax.lines if line.get_linestyle() == "--"] == [[90.0, 90.0]]


def test_a_resumed_fit_records_the_time_before_its_resume_too(tiny, monkeypatch):
    """A run that resumed a fit (time/before_resume_s in its metrics) records that time plus its own wall time."""
    make, calls, _ = tiny
    fake = study.execute

    def resumed(args, folder, threads):
        fake(args, folder, threads)
        result = json.loads((folder / "metrics.json").read_text())
        result["metrics"]["time/before_resume_s"] = 1800.0
        (folder / "metrics.json").write_text(json.dumps(result))

    monkeypatch.setattr(study, "execute", resumed)
    s = make()
    assert study.run_one(s, "teacher/LeNet-5", 0, threads=2) == "ran in 1836 s"   # 1800 + 36.01
    record = json.loads(s.record_path("teacher/LeNet-5", 0).read_text())
    assert record["wall_time_s"] == pytest.approx(1836.01) and record["cpu_h"] == pytest.approx(1836.01 * 2 / 3600,
                                                                                                 abs=1e-4)


def test_a_killed_run_is_run_again_in_its_folder_and_a_finished_one_is_read_back(tiny):
    make, calls, tmp = tiny
    s = make()
    study.run_study(s)
    killed = s.folder("fit/KD", 1)
    (killed / "metrics.json").unlink()   # killed: no metrics.json, its folder (and last.ckpt) stay
    (killed / "checkpoints").mkdir()
    s.record_path("fit/KD", 1).unlink()
    s.record_path("fit/by labels", 0).unlink()   # finished, record not yet written
    calls.clear()
    outcomes = study.run_study(s)
    # run.py resumes the killed run from its folder's last.ckpt; the test that reads its checkpoint runs again
    assert [folder for _, folder in calls] == [killed, s.folder("test/KD tested", 1)]
    assert (killed / "checkpoints").is_dir()   # not cleared: its arguments (a callbacks.* one among them) are the run's
    assert outcomes[("fit/by labels", 0)] == "read back" and s.record_path("fit/by labels", 0).is_file()


def test_a_run_that_reads_a_run_redone_in_an_earlier_call_runs_again(tiny, monkeypatch):
    """The teacher is redone in a call that stops before what reads it runs (here: those runs fail); the next call
    runs again every run that read the old teacher, though their own arguments did not change."""
    make, calls, tmp = tiny
    s = make()
    study.run_study(s)
    s.record_path("teacher/LeNet-5", 0).unlink()
    shutil.rmtree(s.folder("teacher/LeNet-5", 0))
    fake = study.execute

    def teacher_only(args, folder, threads):
        if "model=lenet5" not in args:
            raise RuntimeError("killed")
        fake(args, folder, threads)

    monkeypatch.setattr(study, "execute", teacher_only)
    study.run_study(s)
    monkeypatch.setattr(study, "execute", fake)
    calls.clear()
    outcomes = study.run_study(s)
    assert sorted(str(folder.relative_to(s.logs)) for _, folder in calls) == \
        ["fit/KD/seed0", "fit/KD/seed1", "test/KD_tested/seed0", "test/KD_tested/seed1"]
    assert outcomes[("teacher/LeNet-5", 0)] == outcomes[("fit/by labels", 1)] == "recorded"
    assert set(study.run_study(s).values()) == {"recorded"} and len(calls) == 4


def test_references_resolve_per_seed_and_a_changed_var_reruns(tiny):
    make, calls, tmp = tiny
    s = make()
    study.run_study(s)
    seed1 = s.arguments("fit/KD", 1)
    teacher = f"teacher.checkpoint={tmp}/logs/studies/tiny/teacher/LeNet-5/seed0/checkpoints/last.ckpt"
    assert teacher in seed1   # one teacher for every seed
    tested = s.arguments("test/KD tested", 1)
    assert f"ckpt_path={tmp}/logs/studies/tiny/fit/KD/seed1/checkpoints/last.ckpt" in tested
    assert "optimizer.lr=0.65" in tested and "optimizer.lr=0.55" in s.arguments("test/KD tested", 0)
    assert s.needs("test/KD tested", 1) == [("fit/KD", 1), ("fit/KD", 1), ("teacher/LeNet-5", 0)]
    calls.clear()
    (s.folder("fit/KD", 1) / "checkpoints").mkdir()   # of epochs=1: not to be resumed by a run of epochs=2
    study.run_study(make(sets=["epochs=2"], seeds=[1]))
    assert not (s.folder("fit/KD", 1) / "checkpoints").exists()
    assert sorted(args[2] for args, _ in calls if "method=kd" in args and "train=false" not in args) == \
        ["trainer.max_epochs=2"]   # only the run whose arguments changed, and what reads it
    assert [args[-1] for args, _ in calls] == ["seed=1", "seed=1"]   # KD, then the test that reads KD's folder


def test_section_markers_are_replaced_and_the_rest_of_the_doc_is_untouched(tiny):
    make, _, tmp = tiny
    s = make()
    doc = tmp / "docs" / "results.md"
    study.write_section(s, study.table(s))
    text = doc.read_text()
    assert text.startswith("# Results\n\nintro\n\n<!-- study:tiny:start -->\nNo records yet. Regenerate: ")
    assert text.endswith("CPU hours.\n<!-- study:tiny:end -->\n\nreading, kept\n")   # no empty table
    study.run_study(s)
    study.write_section(s, study.table(s))
    study.write_section(s, study.table(s))
    assert doc.read_text().count("study:tiny:start") == 1 and doc.read_text().endswith("end -->\n\nreading, kept\n")
    doc.write_text("no markers\n")
    with pytest.raises(study.ConfigError, match="<!-- study:tiny:start -->"):
        study.write_section(s, "x")


def test_a_failed_run_skips_what_reads_it_and_the_table_names_the_missing(tiny, monkeypatch):
    make, calls, tmp = tiny
    fake = study.execute

    def failing(args, folder, threads):
        if "method=kd" in args and "seed=1" in args:
            raise RuntimeError("error: data.root=x: not found")
        fake(args, folder, threads)

    monkeypatch.setattr(study, "execute", failing)
    s = make()
    outcomes = study.run_study(s)
    assert outcomes[("fit/KD", 1)] == "FAILED: error: data.root=x: not found"
    assert outcomes[("test/KD tested", 1)].startswith("FAILED: needs fit/KD seed 1")
    assert "No record yet for: fit/KD (seed 1); test/KD tested (seed 1)." in study.table(s)


def test_bad_input_is_one_error_line(capsys):
    assert study.main(["no_such_study"]) == 1
    assert capsys.readouterr().err.startswith("error: study=no_such_study: no bench/studies/no_such_study.yaml")
    name = next(p.stem for p in sorted((ROOT / "bench" / "studies").glob("*.yaml")))
    assert study.main([name, "--table-only", "--set", "nope=1"]) == 1
    assert capsys.readouterr().err.startswith(f"error: --set nope=1: {name} has no var 'nope'")


def test_every_study_plans_its_runs_and_names_its_columns():
    """Every study's references name earlier rows, its stats exist, its section has markers in its doc."""
    for path in sorted((ROOT / "bench" / "studies").glob("*.yaml")):
        s = study.Study(path.stem)
        order = {run: i for i, run in enumerate(s.runs())}
        for run in s.runs():
            assert all(order[need] < order[run] for need in s.needs(*run)), (path.name, run)
            if "${metric:" not in str(s.rows[run[0]]["overrides"]):
                assert "${" not in " ".join(s.arguments(*run)), (path.name, run)
        columns = s.table["columns"]
        assert all(hasattr(stats, c["stat"]) if "stat" in c else c.get("agg", "mean_sd") in study.AGGREGATES
                   for c in columns), path.name
        assert f"<!-- study:{s.section}:start -->" in s.doc.read_text(), path.name


def test_stats_by_hand():
    assert stats.pm([0.5, 0.6]) == "55.00 ± 7.07" and stats.pm([0.5]) == "50.00"   # one seed: no spread
    # uniform networks at (200, 50), (100, 40), (400, 60): between two of them the line through them (46 at 160);
    # outside, along the nearest two (at 500: 60 + 100 x 10 / 200 = 65)
    uniform = {f"u/{f}": [rec(0, a, **{"model/flops": f})] for f, a in ((200, 0.5), (100, 0.4), (400, 0.6))}
    for flops, acc, gap in ((160, 0.47, "1.00"), (500, 0.70, "5.00"), (50, 0.30, "-5.00")):
        records = {**uniform, "r/x": [rec(0, acc, **{"model/flops": flops})]}
        assert stats.above_line(records, "r/x", list(uniform)) == gap


def rec(seed, acc, **metrics):
    return {"seed": seed, "metrics": {"test/acc": acc, **metrics}, "wall_time_s": 100.0}


def test_study_stats_on_records_by_hand():
    score = "model/search_score"
    records = {"r/best": [rec(0, 0.47, **{"model/flops": 160, score: 0.3}),
                          rec(1, 0.40, **{"model/flops": 100, score: 0.35})],
               "r/u1": [rec(0, 0.40, **{"model/flops": 100, score: 0.2}),
                        rec(1, 0.40, **{"model/flops": 100, score: 0.25})],
               "r/u2": [rec(0, 0.50, **{"model/flops": 200}), rec(1, 0.50, **{"model/flops": 200})]}
    # seed 0: 47 - 46 = +1; seed 1: on the uniform network itself, 0: mean 0.5, sd 0.71
    assert stats.above_line(records, "r/best", ["r/u1", "r/u2"]) == "0.50 ± 0.71"
    # scores 0.3 0.35 (best), 0.2 0.25 (u1) -> ranks 3 4 1 2; tests 0.47 0.40 0.40 0.40 -> ranks 4 2 2 2;
    # deviations from 2.5: 0.5 1.5 -1.5 -0.5 and 1.5 -0.5 -0.5 -0.5: covariance 1, squares 5 and 3: 1 / sqrt(15)
    assert stats.rank_agreement(records, "r/best", "r") == "+0.26 (4 networks)"   # u2 has no score: left out
    # within the rows labelled u*: only u1's two networks have a score, too few for a rank correlation
    assert stats.rank_agreement(records, "r/best", "r", within=["u"]) == "+0.26 (4 networks); u: –"
    assert stats.rank_agreement(records, "r/u1", "r") == ""
    flat = {"r/a": [rec(s, 0.4, **{score: 0.1 * s}) for s in range(3)]}   # one test top-1 for all: no ranking
    assert stats.rank_agreement(flat, "r/a", "r") == "– (3 networks)"
    # per seed: 47 - 40 = +7 and 40 - 40 = 0: mean 3.5, sd 4.95; against one seed only, the difference of the means
    assert stats.minus(records, "r/best", "r/u1") == "+3.50 ± 4.95" and stats.minus(records, "r/u1", "r/u1") == ""
    assert stats.minus({**records, "r/one": [rec(0, 0.30)]}, "r/best", "r/one") == "+13.50"
    # over the two seeds both ran (u2 adds seed 2): 40 - 50 twice; a row outside ``rows``: blank
    u2 = [*records["r/u2"], rec(2, 0.90)]
    assert stats.minus({**records, "r/u2": u2}, "r/u1", "r/u2") == "-10.00 ± 0.00"
    assert stats.minus(records, "r/u1", "r/u2", rows=["r/best"]) == ""
    dafl = {"d/x": [rec(0, 0.9, **{"train/diversity_epoch": 0.01, "collapse_threshold": 0.05}),
                    rec(1, 0.9, **{"train/diversity_epoch": 0.2, "collapse_threshold": 0.05})]}
    assert stats.collapsed(dafl, "d/x") == "0" and stats.collapsed(records, "r/u1") == "–"
    curves = {"d/x": [rec(0, 0, val_acc_curve=[0.5, 0.8, 0.95, 0.97]), rec(1, 0, val_acc_curve=[0.5, 0.6])]}
    # seed 0 reaches 0.9 at its third of four epochs: 100 s x 3 / 4 = 75 s; seed 1 never
    assert stats.time_to(curves, "d/x", 0.9) == "75 (1 of 2 seeds)"
    assert stats.time_to(curves, "d/x", 0.99) == "never"
    curves["d/x"][0]["metrics"]["val_time_curve"] = [20.0, 41.0, 63.0, 90.0]   # the fit's logged wall time
    assert stats.time_to(curves, "d/x", 0.9) == "63 (1 of 2 seeds)"
    for r, teacher in zip(curves["d/x"], (0.99, 0.62), strict=True):
        r["metrics"]["test/teacher_acc"] = teacher
    # 5 points below each one's teacher: seed 0 0.94 at 63 s, seed 1 0.57 at 100 s x 2 / 2: mean 81.5 s
    assert stats.time_to(curves, "d/x", -0.05, relative_to="test/teacher_acc") == "82"


def test_a_real_study_run_writes_its_record(tmp_path, monkeypatch):
    """One ``python run.py`` as the runner starts it (digits, debug=tiny): the record holds its metrics and the
    study's outputs read from the run folder; the run's output sits beside its folder."""
    spec = {**TINY, "seeds": [0], "stages": {"fit": TINY["stages"]["fit"][1:]}, "table": [
        {"header": "test top-1 (%)", "metric": "test/acc", "scale": 100}]}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(sort_keys=False, data={**spec, "outputs": {
        "lr": ".hydra/config.yaml:optimizer.lr", "loss_curve": "csv/**/metrics.csv:train/loss_epoch"}}))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    s = study.Study(str(tmp_path / "tiny.yaml"), root=tmp_path)
    assert study.run_study(s, parallel=1)[("fit/by labels", 0)].startswith("ran in")
    record = json.loads(s.record_path("fit/by labels", 0).read_text())
    assert record["overrides"] == ["method=supervised", "debug=tiny", "seed=0"]
    assert 0 <= record["metrics"]["test/acc"] <= 1 and record["metrics"]["lr"] == 0.001
    assert len(record["metrics"]["loss_curve"]) == 1 and s.folder("fit/by labels", 0).with_suffix(".out").is_file()


@pytest.mark.slow
def test_a_real_chain_reruns_nothing_and_resumes_a_killed_run(tmp_path, monkeypatch):
    """The tiny study with real runs: teacher -> KD -> test from KD's checkpoint; a second call runs nothing; a run
    whose metrics.json and record are gone (killed after its checkpoint) runs again in its folder."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "seeds": [0]}, sort_keys=False))
    s = study.Study(str(tmp_path / "tiny.yaml"), root=tmp_path)
    assert all(o.startswith("ran in") for o in study.run_study(s).values())
    assert set(study.run_study(s).values()) == {"recorded"}
    folder = s.folder("test/KD tested", 0)
    (folder / "metrics.json").unlink()
    s.record_path("test/KD tested", 0).unlink()
    assert study.run_study(s)[("test/KD tested", 0)].startswith("ran in")
    tested = json.loads(s.record_path("test/KD tested", 0).read_text())["metrics"]["test/acc"]
    assert tested == json.loads(s.record_path("fit/KD", 0).read_text())["metrics"]["test/acc"]


@pytest.mark.e2e
@pytest.mark.slow
def test_a_study_without_its_data_prints_run_pys_line(tmp_path):
    """A missing data set: each run fails with run.py's one error line, what reads it is skipped, exit status 1."""
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- study:nodata:start -->\n<!-- study:nodata:end -->\n")
    spec = {"vars": {"data_root": "x"}, "doc": str(doc), "stages": {
        "teacher": [{"label": "t", "overrides": ["method=supervised", "data=mnist", "data.root=${data_root}"]}],
        "student": [{"label": "s", "overrides": ["method=kd", "data=mnist", "data.root=${data_root}",
                                                 "teacher.checkpoint=${run:teacher/t}/checkpoints/last.ckpt"]}]},
        "table": [{"header": "test top-1", "metric": "test/acc"}]}
    (tmp_path / "nodata.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    try:
        proc = subprocess.run([sys.executable, "bench/study.py", str(tmp_path / "nodata.yaml"), "--set",
                               f"data_root={tmp_path / 'x'}"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(ROOT / "logs" / "studies" / "nodata", ignore_errors=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout[-3000:]
    assert f"teacher/t seed 0: FAILED: error: data.root={tmp_path / 'x'}: " in proc.stdout
    assert "student/s seed 0: FAILED: needs teacher/t seed 0, which failed" in proc.stdout
    assert "No records yet." in doc.read_text()
