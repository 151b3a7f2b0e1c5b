"""The small statistics of the bench scripts, on hand-computed values: Spearman's rank correlation and the searched
network's height above the uniform-width line (bench/metapruning_budgets.py), the per-recipe groups of the frontier
(bench/reproduce.py)."""
import math
import sys

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from common import ranks, spearman  # noqa: E402
from metapruning_budgets import above_line, ranking  # noqa: E402
from reproduce import groups  # noqa: E402


def test_ranks_average_ties():
    assert ranks([0.3, 0.1, 0.3, 0.2]) == [3.5, 1.0, 3.5, 2.0]


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x 1 2 3 4, y 2 1 4 3: d^2 = 1 + 1 + 1 + 1 = 4, rho = 1 - 6 * 4 / (4 * 15) = 0.6
    assert spearman([1, 2, 3, 4], [0.2, 0.1, 0.4, 0.3]) == pytest.approx(0.6)
    # with a tie: ranks x 1 2 3, y 1.5 1.5 3: Pearson of the ranks = 1.5 / sqrt(2 * 1.5) = 0.8660
    assert spearman([1, 2, 3], [5, 5, 7]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))


def pick(test, flops):
    return {"test": test, "flops": flops}


def test_above_line_interpolates_between_the_uniform_widths():
    # uniform (100 FLOPs, 40%) and uniform_next (200, 50%): the line is 46% at 160 FLOPs, the searched 47%
    row = {"best": pick(0.47, 160), "uniform": pick(0.40, 100), "uniform_next": pick(0.50, 200)}
    assert above_line(row) == pytest.approx(0.01)
    row["best"] = pick(0.40, 100)   # at the uniform network itself: on the line
    assert above_line(row) == pytest.approx(0.0)


def test_ranking_pools_budgets_and_seeds_per_data_set():
    def row(data, scores, tests):
        return {"data": data, "scores": dict(zip(("best", "uniform", "random"), scores, strict=True)),
                **{p: pick(t, 1) for p, t in zip(("best", "uniform", "random"), tests, strict=True)}}

    rows = [row("cifar10", [0.3, 0.2, 0.1], [0.5, 0.4, 0.3]), row("cifar10", [0.35, 0.25, 0.15], [0.2, 0.6, 0.1]),
            row("digits", [0.9, 0.8, 0.7], [0.1, 0.2, 0.3])]
    rho = ranking(rows)
    assert rho["digits"] == (pytest.approx(-1.0), 3)
    # cifar10 scores 0.3 0.2 0.1 0.35 0.25 0.15 -> ranks 5 3 1 6 4 2; tests 0.5 0.4 0.3 0.2 0.6 0.1 -> 5 4 3 2 6 1;
    # d = 0 -1 -2 4 -2 1, sum d^2 = 26, rho = 1 - 6 * 26 / (6 * 35) = 0.2571
    assert rho["cifar10"] == (pytest.approx(1 - 156 / 210), 6)


def record(method, flops, acc):
    return {"method": method, "metrics": {"model/flops": flops, "test/acc": acc}}


def test_frontier_groups_seeds_of_a_recipe_and_splits_budgets():
    found = groups([record("a on X", 100, 0.40), record("a on X", 110, 0.44), record("a on X", 300, 0.50),
                    record("b on X", 100, 0.30), record("a on Y", 100, 0.9), {"method": "c on X", "metrics": {}}])
    assert [(g["label"], g["n"]) for g in found] == [("a on X", 2), ("a on X", 1), ("a on Y", 1), ("b on X", 1)]
    first = found[0]
    assert (first["flops"], first["acc"], first["sd"]) == (pytest.approx(105), pytest.approx(42),
                                                           pytest.approx(math.sqrt(8)))
    assert (first["method"], first["data"]) == ("a", "X") and found[1]["sd"] == 0.0


def test_reproduce_cifar10_part_passes_the_tables_teacher_to_the_composition(tmp_path, monkeypatch):
    """--only cifar10: the CIFAR table, the CIFAR budgets, then the composition from the checkpoint of the teacher run
    the table made (found in its workdir, not typed); without --cifar-root it is an error."""
    import reproduce

    teacher = tmp_path / "cifar10_table" / "teacher" / "logs" / "supervised" / "runs" / "t"
    (teacher / "checkpoints").mkdir(parents=True)
    cifar = tmp_path / "cifar"
    from cifar10_table import QUIET, TEACHER

    command = " ".join(["python", "run.py", *TEACHER, f"data.root={cifar.resolve()}", *QUIET])
    (teacher / "metrics.json").write_text(f'{{"command": "{command}", "metrics": {{}}}}')
    commands = []
    monkeypatch.setattr(reproduce, "RUNS", tmp_path)
    monkeypatch.setattr(reproduce.subprocess, "run", lambda args, **kw: commands.append(args[1:]))
    monkeypatch.setattr(reproduce, "runs_under", lambda folders: [])
    monkeypatch.setattr(reproduce, "frontier_figure", lambda records: type("F", (), {"savefig": lambda *a, **k: 0}))
    monkeypatch.setattr(sys, "argv", ["reproduce.py", "--cifar-root", str(cifar), "--only", "cifar10", "--out",
                                      str(tmp_path / "f.png")])
    reproduce.main()
    assert [c[0] for c in commands] == ["bench/cifar10_table.py", "bench/metapruning_budgets.py",
                                        "bench/metapruning_compose.py"]
    compose = commands[2]
    assert compose[compose.index("--cifar-teacher") + 1] == str(teacher / "checkpoints" / "last.ckpt")
    assert compose[compose.index("--cifar-root") + 1] == str(cifar.resolve())
    monkeypatch.setattr(sys, "argv", ["reproduce.py", "--only", "cifar10"])
    with pytest.raises(SystemExit):
        reproduce.main()
