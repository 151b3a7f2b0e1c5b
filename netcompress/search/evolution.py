"""Evolutionary search over channel encodings under a FLOPs (and optional parameter and latency) budget.

The official algorithm: a population of 50; each generation keeps the best 50 of everything evaluated so far
(elitist), takes the top 10 as parents and breeds 25 mutations (each gene redrawn with p = 0.1 among the other
choices) and 25 crossovers (each gene from one of two distinct parents), then fills up with random encodings.
Encodings outside the budget are rejected when they are generated, so no evaluation is spent on them.

The state (everything evaluated and the next population) is written atomically after every generation and a
new run with the same state file resumes where the killed one stopped. Each generation draws from its own
``random.Random(seed, generation)``, so a resumed search continues exactly as an uninterrupted one would.
"""
import json
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from netcompress.core import ConfigError, atomic_write_text

Encoding = tuple


@dataclass
class Budget:
    """Feasible set: ``min_flops <= flops <= max_flops``, ``params <= max_params`` and ``min_latency <= latency <=
    max_latency`` (milliseconds predicted by a latency lookup table, netcompress/search/latency.py; None = no bound).

    ``measure(encoding) -> (flops, params)`` or ``(flops, params, latency_ms)`` is memoized here; ``cost`` returns
    ``(flops, params, latency_ms or None)``.
    """
    measure: Callable[[Sequence[int]], tuple]
    max_flops: float | None = None
    min_flops: float | None = None
    max_params: float | None = None
    max_latency: float | None = None
    min_latency: float | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def cost(self, encoding) -> tuple:
        encoding = tuple(encoding)
        if encoding not in self._cache:
            flops, params, *latency = self.measure(encoding)
            self._cache[encoding] = (int(flops), int(params), float(latency[0]) if latency else None)
        return self._cache[encoding]

    def within_upper(self, encoding) -> bool:
        """Within the upper bounds (FLOPs, parameters, latency)."""
        flops, params, latency = self.cost(encoding)
        return ((self.max_flops is None or flops <= self.max_flops)
                and (self.max_params is None or params <= self.max_params)
                and (self.max_latency is None or latency <= self.max_latency))

    def feasible(self, encoding) -> bool:
        flops, _, latency = self.cost(encoding)
        return (self.within_upper(encoding) and (self.min_flops is None or flops >= self.min_flops)
                and (self.min_latency is None or latency >= self.min_latency))

    def check_attainable(self, smallest, largest) -> None:
        """Clear errors for budgets no encoding can meet (cost grows with every width)."""
        lo_flops, lo_params, lo_latency = self.cost(smallest)
        hi_flops, _, hi_latency = self.cost(largest)
        if self.max_flops is not None and self.max_flops < lo_flops:
            raise ConfigError(f"search.max_flops={self.max_flops:.4g}: no encoding meets it; the narrowest network "
                              f"(every ratio 0.10) already has {lo_flops:.4g} FLOPs and the full one {hi_flops:.4g}. "
                              f"Raise search.max_flops (a fraction of the full network such as 0.5, or FLOPs).")
        if self.min_flops is not None and self.min_flops > hi_flops:
            raise ConfigError(f"search.min_flops={self.min_flops:.4g}: above the full network's {hi_flops:.4g} "
                              f"FLOPs; lower it or set it to null.")
        if (self.min_flops is not None and self.max_flops is not None and self.min_flops > self.max_flops):
            raise ConfigError(f"search.min_flops={self.min_flops:.4g} > search.max_flops={self.max_flops:.4g}: "
                              f"the FLOPs window is empty.")
        if self.max_params is not None and self.max_params < lo_params:
            raise ConfigError(f"search.max_params={self.max_params:.4g}: no encoding meets it; the narrowest network "
                              f"has {lo_params:.4g} parameters. Raise search.max_params or set it to null.")
        if self.max_latency is not None and self.max_latency < lo_latency:
            raise ConfigError(f"search.max_latency={self.max_latency:.4g}ms: no encoding meets it; the narrowest "
                              f"network (every ratio 0.10) is predicted at {lo_latency:.4g} ms and the full one at "
                              f"{hi_latency:.4g} ms on this device (at this batch size). Raise search.max_latency "
                              f"to {lo_latency:.3g}ms or more (a fraction >= {lo_latency / hi_latency:.2f} of the full "
                              f"network), or measure at a larger search.latency.batch_size.")
        if self.min_latency is not None and self.min_latency > hi_latency:
            raise ConfigError(f"search.min_latency={self.min_latency:.4g}ms: above the full network's predicted "
                              f"{hi_latency:.4g} ms; lower it or set it to null.")
        if (self.min_latency is not None and self.max_latency is not None and self.min_latency > self.max_latency):
            raise ConfigError(f"search.min_latency={self.min_latency:.4g}ms > search.max_latency="
                              f"{self.max_latency:.4g}ms: the latency window is empty.")


FLOPS_UNITS = {"k": 1e3, "m": 1e6, "g": 1e9}
TIME_UNITS = {"ms": 1.0, "us": 1e-3, "s": 1e3}   # latency budgets are in milliseconds


def resolve_budget(value, full: float, key: str, latency: bool = False) -> float | None:
    """A budget as given by the user: null, a fraction of the full network (<= 1), or an absolute amount: FLOPs or
    parameters as a number or with a suffix ('330M', '2G'); a latency with its unit ('2.5ms', '800us'), returned
    in milliseconds (a bare number above 1 has no unit: an error)."""
    if value is None:
        return None
    units, unit = TIME_UNITS if latency else FLOPS_UNITS, ""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([a-zA-Z]*)\s*", value)
        if not m or (m.group(2) and m.group(2).lower() not in units):
            raise ConfigError(f"{key}={value!r}: write a fraction of the full network (0.5) or " + (
                "a time with its unit (2.5ms, 800us)." if latency
                else "a number of FLOPs (330000000) or one with a suffix (330M, 2G)."))
        value, unit = m.group(1), m.group(2).lower()
    typed, value = value, float(value)
    if value <= 0:
        raise ConfigError(f"{key}={typed}: must be positive (a fraction of the full network or an absolute amount).")
    if latency and not unit and value > 1:
        raise ConfigError(f"{key}={typed}: a bare number is a fraction of the full network's predicted latency "
                          f"({full:.3f} ms), 0 < x <= 1; give a time with its unit instead, e.g. {key}=2.5ms.")
    if not latency and not unit and 1 < value < 1000:   # neither a fraction nor a plausible count: 2.0 is not "twice"
        raise ConfigError(f"{key}={typed}: ambiguous. A fraction of the full network is at most 1 ({key}=0.5: half "
                          f"of it); an absolute count is FLOPs ({key}=330000000) or with a suffix ({key}=330M).")
    if unit:
        return value * units[unit]
    return value * full if value <= 1 else value


@dataclass
class SearchConfig:
    population: int = 50
    generations: int = 20
    parents: int = 10
    mutations: int = 25
    crossovers: int = 25
    mutation_prob: float = 0.1
    seed: int = 0
    random_choices: tuple | None = None   # (lo, hi): random candidates draw choice ids lo..hi (official ResNet: 12..23)


class EvolutionarySearch:
    """``evaluate(list of encodings) -> list of accuracies``; ``on_generation(generation, stats)`` reports progress."""

    def __init__(self, num_genes: int, num_choices: int, budget: Budget, evaluate: Callable, config: SearchConfig,
                 state_path: str | os.PathLike | None = None, on_generation: Callable | None = None,
                 write_state: bool = True):
        if config.parents < 2 and config.crossovers:
            raise ConfigError(f"search.parents={config.parents}: crossover needs at least 2 parents.")
        if config.random_choices is not None:
            lo, hi = config.random_choices
            if not 0 <= lo <= hi < num_choices:
                raise ConfigError(f"search.random_choices=[{lo}, {hi}]: need 0 <= lo <= hi <= {num_choices - 1} "
                                  f"(choice ids; the official ResNet search draws [12, 23]); null for all.")
            config.random_choices = (int(lo), int(hi))
        self.num_genes, self.num_choices = num_genes, num_choices
        self.budget, self.evaluate, self.cfg = budget, evaluate, config
        self.state_path = Path(state_path) if state_path else None
        self.write_state = write_state   # False on DDP ranks other than 0: they read the state, never write it
        self.on_generation = on_generation or (lambda generation, stats: None)
        self.evaluated: dict[Encoding, dict] = {}
        self.history: list[dict] = []
        self.generation = 0
        self.population: list[Encoding] = []

    # ---- breeding -------------------------------------------------------------------------------------------
    def _rng(self, generation: int) -> random.Random:
        return random.Random(self.cfg.seed * 1_000_003 + generation)

    def _accept(self, encoding, chosen: list, seen: set) -> bool:
        if encoding in seen or encoding in self.evaluated or not self.budget.feasible(encoding):
            return False
        chosen.append(encoding)
        seen.add(encoding)
        return True

    def _breed(self, count: int, make: Callable, chosen: list, seen: set, tries_per: int) -> None:
        target = len(chosen) + count
        for _ in range(count * tries_per):
            if len(chosen) >= target:
                return
            self._accept(make(), chosen, seen)

    def next_population(self, parents: list, rng: random.Random) -> list:
        chosen, seen = [], set()
        n = self.num_choices

        def mutate():
            parent = rng.choice(parents)
            return tuple(rng.choice([c for c in range(n) if c != g]) if rng.random() < self.cfg.mutation_prob
                         else g for g in parent)

        def cross():
            a, b = rng.sample(parents, 2)
            return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b, strict=False))

        lo, hi = self.cfg.random_choices or (0, n - 1)

        def fresh():
            return tuple(rng.randint(lo, hi) for _ in range(self.num_genes))

        if parents:
            self._breed(self.cfg.mutations, mutate, chosen, seen, tries_per=10)
            if len(parents) >= 2:
                self._breed(self.cfg.crossovers, cross, chosen, seen, tries_per=10)
        self._breed(self.cfg.population - len(chosen), fresh, chosen, seen, tries_per=200)
        return chosen

    # ---- state ----------------------------------------------------------------------------------------------
    def _fingerprint(self) -> dict:
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.cfg).items()}
        return {"config": config, "num_genes": self.num_genes, "num_choices": self.num_choices,
                "budget": [self.budget.max_flops, self.budget.min_flops, self.budget.max_params,
                           *([self.budget.max_latency, self.budget.min_latency]
                             if self.budget.max_latency is not None or self.budget.min_latency is not None else [])]}

    def save_state(self) -> None:
        if self.state_path is None or not self.write_state:
            return
        state = {"fingerprint": self._fingerprint(), "generation": self.generation,
                 "population": [list(e) for e in self.population], "evaluated": list(self.evaluated.values()),
                 "history": self.history}
        atomic_write_text(self.state_path, json.dumps(state))

    def load_state(self) -> bool:
        """Resume from the state file if it exists; False when starting fresh."""
        if self.state_path is None or not self.state_path.is_file():
            return False
        try:
            state = json.loads(self.state_path.read_text())
        except (ValueError, UnicodeDecodeError):
            state = None
        if not isinstance(state, dict) or not {"fingerprint", "generation", "population"} <= state.keys():
            raise ConfigError(f"search.state={self.state_path}: not a search state file. Point search.state at the "
                              f"search_state.json a search wrote, or leave it unset to start over.")
        if state["fingerprint"] != json.loads(json.dumps(self._fingerprint())):
            raise ConfigError(f"search.state={self.state_path}: this state file belongs to a search with other "
                              f"settings ({state['fingerprint']}). Delete it, or point search.state elsewhere.")
        self.generation = state["generation"]
        self.population = [tuple(e) for e in state["population"]]
        self.evaluated = {tuple(r["encoding"]): r for r in state["evaluated"]}
        self.history = state["history"]
        return True

    # ---- the loop -------------------------------------------------------------------------------------------
    def ranked(self) -> list[dict]:
        """Everything evaluated, best first (ties broken by fewer FLOPs, then the encoding)."""
        return sorted(self.evaluated.values(), key=lambda r: (-r["acc"], r["flops"], r["encoding"]))

    def run(self) -> list[dict]:
        resumed = self.load_state()
        if not resumed:
            self.population = self.next_population([], self._rng(0))
            if not self.population:
                raise ConfigError("search.max_flops/min_flops/max_params/max_latency/min_latency: not one random "
                                  f"encoding in {200 * self.cfg.population} tries met the budget; widen it, or draw "
                                  f"narrower random candidates (search.random_choices=[0,15]).")
        while self.generation < self.cfg.generations and self.population:   # empty: the space is exhausted
            g = self.generation
            todo = [e for e in self.population if e not in self.evaluated]
            for encoding, acc in zip(todo, self.evaluate([list(e) for e in todo]), strict=False):
                flops, params, latency = self.budget.cost(encoding)
                self.evaluated[encoding] = {"encoding": list(encoding), "acc": float(acc), "flops": flops,
                                            "params": params, "generation": g,
                                            **({"latency_ms": latency} if latency is not None else {})}
            current = [self.evaluated[e] for e in self.population]
            top = self.ranked()[:self.cfg.population]
            stats = {"generation": g, "evaluated": len(self.evaluated), "best_acc": top[0]["acc"],
                     "mean_acc": sum(r["acc"] for r in current) / len(current),
                     "top_mean_acc": sum(r["acc"] for r in top) / len(top), "best_flops": top[0]["flops"],
                     "mean_flops": sum(r["flops"] for r in current) / len(current)}
            self.history.append(stats)
            self.population = self.next_population([tuple(r["encoding"]) for r in top[:self.cfg.parents]],
                                                   self._rng(g + 1))
            self.generation = g + 1
            self.save_state()
            self.on_generation(g, stats)
        return self.ranked()
