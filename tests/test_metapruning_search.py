"""The evolutionary search: determinism, budgets, resume after a kill, DDP-free evaluation helpers."""
import json

import pytest
import torch
from torch import nn

from netcompress.core import ConfigError
from netcompress.search.evaluate import CandidateEvaluator, recalibrate_bn, top1
from netcompress.search.evolution import Budget, EvolutionarySearch, SearchConfig, resolve_budget

GENES, CHOICES = 6, 31


def cost(encoding):
    """A stand-in for count_flops: grows with every width (like a network's FLOPs)."""
    return sum((c + 1) * (i + 1) for i, c in enumerate(encoding)), sum(c + 1 for c in encoding)


FULL = cost([30] * GENES)


def accuracy(encoding):
    """Deterministic score that prefers width in the last genes: the search should find that."""
    return sum(c * (i + 1) ** 2 for i, c in enumerate(encoding)) / (30 * 91)


class Scorer:
    def __init__(self, fail_at_call=None):
        self.calls, self.scored, self.fail_at_call = 0, [], fail_at_call

    def __call__(self, encodings):
        self.calls += 1
        if self.fail_at_call == self.calls:
            raise KeyboardInterrupt("killed")
        self.scored += [tuple(e) for e in encodings]
        return [accuracy(e) for e in encodings]


def make(scorer, state=None, seed=0, max_flops=0.4, **cfg):
    config = SearchConfig(**{**dict(population=12, generations=5, parents=4, mutations=6, crossovers=6,
                                    seed=seed), **cfg})
    budget = Budget(cost, max_flops=resolve_budget(max_flops, FULL[0], "search.max_flops"))
    return EvolutionarySearch(GENES, CHOICES, budget, scorer, config, state_path=state)


def test_fixed_seed_is_deterministic_and_respects_the_budget():
    a, b, c = make(Scorer()), make(Scorer()), make(Scorer(), seed=1)
    ra, rb, rc = a.run(), b.run(), c.run()
    assert ra == rb and a.history == b.history
    assert [r["encoding"] for r in ra] != [r["encoding"] for r in rc]
    limit = 0.4 * FULL[0]
    assert all(r["flops"] <= limit for r in ra) and len(ra) > 12
    # the search improves on its random start and the best candidate uses most of the budget
    assert a.history[-1]["best_acc"] > a.history[0]["best_acc"]
    assert ra[0]["flops"] > 0.8 * limit
    # no encoding is scored twice
    assert len(set(a.evaluate.scored)) == len(a.evaluate.scored)


def test_official_breeding_counts():
    search = make(Scorer(), population=50, parents=10, mutations=25, crossovers=25, max_flops=0.9)
    parents = [tuple([i] * GENES) for i in range(10, 20)]
    import random
    population = search.next_population(parents, random.Random(0))
    assert len(population) == 50 and len(set(population)) == 50
    mutated = population[:25]   # each differs from some parent in about 10% of the genes
    assert all(min(sum(a != b for a, b in zip(m, p, strict=False)) for p in parents) <= 3 for m in mutated)
    crossed = population[25:50]
    assert all(all(any(g == p[i] for p in parents) for i, g in enumerate(x)) for x in crossed)


def test_param_budget_and_window():
    budget = Budget(cost, max_flops=None, min_flops=0.3 * FULL[0], max_params=0.5 * FULL[1])
    search = EvolutionarySearch(GENES, CHOICES, budget, Scorer(), SearchConfig(population=8, generations=2,
                                                                               parents=3, mutations=3, crossovers=3))
    for r in search.run():
        assert r["params"] <= 0.5 * FULL[1] and r["flops"] >= 0.3 * FULL[0]


def test_budget_forms_and_infeasible_budget_is_a_config_error():
    assert resolve_budget(0.5, 1000, "k") == 500 and resolve_budget(330e6, 1e9, "k") == 330e6
    assert resolve_budget("330M", 1e9, "k") == 330e6 and resolve_budget("2G", 4e9, "k") == 2e9
    assert resolve_budget(None, 1, "k") is None
    with pytest.raises(ConfigError, match="search.max_flops"):
        resolve_budget("lots", 1, "search.max_flops")
    smallest = [0] * GENES
    budget = Budget(cost, max_flops=cost(smallest)[0] - 1)
    with pytest.raises(ConfigError, match=r"search.max_flops=.*narrowest network"):
        budget.check_attainable(smallest, [30] * GENES)
    with pytest.raises(ConfigError, match="search.max_params"):
        Budget(cost, max_params=1).check_attainable(smallest, [30] * GENES)
    with pytest.raises(ConfigError, match="search.min_flops"):
        Budget(cost, min_flops=FULL[0] + 1).check_attainable(smallest, [30] * GENES)


def test_killed_search_resumes_at_its_last_generation(tmp_path):
    state = tmp_path / "state.json"
    reference = make(Scorer())
    expected = reference.run()

    killed = make(Scorer(fail_at_call=4), state=state)   # killed while scoring generation 4 (index 3)
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    saved = json.loads(state.read_text())
    assert saved["generation"] == 3 and len(saved["history"]) == 3
    assert not list(tmp_path.glob(".*tmp"))   # written atomically: no temp file left behind

    scorer = Scorer()
    resumed = make(scorer, state=state)
    assert resumed.run() == expected and resumed.history == reference.history
    assert scorer.calls == 2   # generations 4 and 5 only
    assert json.loads(state.read_text())["generation"] == 5

    with pytest.raises(ConfigError, match="search.state"):   # a state file of another search is refused
        make(Scorer(), state=state, seed=7).run()


def test_bn_recalibration_and_top1():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3))
    net[2].running_mean.fill_(100.0)
    batches = [torch.randn(16, 4) * 2 + 3 for _ in range(3)]
    recalibrate_bn(net, batches)
    with torch.no_grad():
        outputs = torch.cat([net[1](net[0](x)) for x in batches])
    assert torch.allclose(net[2].running_mean, outputs.mean(0), atol=1e-5)   # an exact average, not an EMA
    assert net[2].momentum == 0.1 and net.training
    x = torch.randn(10, 4)
    y = net.eval()(x).argmax(1)
    y[:3] = (y[:3] + 1) % 3
    assert top1(net, [(x, y)]) == pytest.approx(0.7)


def test_candidate_evaluator_scores_each_encoding_of_a_pruningnet():
    from netcompress.networks.pruningnet import build_pruningnet

    torch.manual_seed(0)
    net = build_pruningnet("mobilenetv1", "small", 10, 1)
    x, y = torch.randn(16, 1, 32, 32), torch.randint(0, 10, (16,))
    evaluator = CandidateEvaluator(net, [x], [(x, y)])
    encodings = [[0] * 5, [30] * 5, [10, 20, 5, 7, 9]]
    scores = evaluator(encodings)
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
    assert scores == evaluator(encodings)   # recalibration makes the score independent of what ran before
