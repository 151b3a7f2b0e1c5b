"""Runs a study (bench/studies/<name>.yaml: labelled rows of ``python run.py`` overrides over seeds, in chained
stages), ``--parallel`` runs at once of ``--threads`` threads each, records each finished run in docs/records/<name>/,
writes the records' table into its section of the docs and its picture, if any, to docs/<name>.png (``--table-only``:
from the records alone). The study file's format and what runs again: bench/studies/README.md.

    python bench/study.py <name> [<name> ...] [--set KEY=VALUE ...] [--parallel 2] [--threads 1] [--seeds 0,1]
                          [--table-only]
"""
import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import stats  # noqa: E402

from netcompress.core import ConfigError, atomic_write_text  # noqa: E402
from netcompress.reporting.loggers import logged_values  # noqa: E402

QUIET = ["callbacks.progress_bar=null", "callbacks.model_summary=null"]   # not part of a run's arguments
AGGREGATES = {"mean_sd": stats.pm, "mean": lambda v, s, d: f"{s * stats.mean_sd(v)[0]:.{d}f}",
              "min": lambda v, s, d: f"{s * min(v):.{d}f}", "max": lambda v, s, d: f"{s * max(v):.{d}f}",
              "n": lambda v, s, d: str(len(v))}
REFERENCE = re.compile(r"\$\{(run|metric):([^}:]+)(?::([^}]+))?\}")


def slug(key: str) -> Path:
    """``stage/label`` as a path, each part's runs of other characters than A-Za-z0-9.+- written _."""
    return Path(*(re.sub(r"[^A-Za-z0-9.+-]+", "_", part).strip("_") or "_" for part in key.split("/", 1)))


class Study:
    """A study file with its vars set, and where its runs, records and section go (``root``: the repository)."""

    def __init__(self, name: str, sets: list[str] = (), seeds: list[int] | None = None, root: Path = ROOT,
                 records: Path | None = None, logs: Path | None = None):
        path = Path(name) if name.endswith(".yaml") else root / "bench" / "studies" / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"study={name}: no {path.relative_to(root) if path.is_relative_to(root) else path}; "
                              f"the studies are {', '.join(p.stem for p in sorted(path.parent.glob('*.yaml')))}")
        self.spec, self.name, self.root = yaml.safe_load(path.read_text()), path.stem, root
        self.vars = {k: str(v) for k, v in (self.spec.get("vars") or {}).items()}
        for item in sets:
            key, _, value = item.partition("=")
            if key not in self.vars:
                raise ConfigError(f"--set {item}: {self.name} has no var {key!r}; its vars: {sorted(self.vars)}")
            self.vars[key] = value
        self.seeds = seeds if seeds is not None else list(self.spec.get("seeds", [0]))
        self.records = (records or root / "docs" / "records") / self.name
        self.logs = (logs or root / "logs" / "studies") / self.name
        self.doc = root / self.spec.get("doc", "docs/results.md")
        self.section = self.spec.get("section", self.name)
        self.rows = {f"{stage}/{row['label']}": {**row, "stage": stage, "overrides": flat(row["overrides"])}
                     for stage, rows in self.spec["stages"].items() for row in rows}
        order = list(self.spec["stages"])
        table = self.spec["table"]   # its columns, or a dict with them, or another study's name: that one's table
        table = Study(table, root=root).spec["table"] if isinstance(table, str) else table
        self.table = {"stages": order, **(table if isinstance(table, dict) else {"columns": table})}
        self.table_keys = [k for k in self.rows if k.split("/", 1)[0] in self.table["stages"]]   # its rows
        for key, row in self.rows.items():
            for m in REFERENCE.finditer(" ".join(row["overrides"])):
                if m[2] not in self.rows or order.index(m[2].split("/")[0]) >= order.index(row["stage"]):
                    raise ConfigError(f"{m[0]} in {self.name} {key}: name a row of an earlier stage as "
                                      f"<stage>/<label>; rows: {', '.join(self.rows)}")

    def seeds_of(self, key: str) -> list[int]:
        own = self.rows[key].get("seeds")
        return [s for s in self.seeds if own is None or s in own] or list(own or [])

    def folder(self, key: str, seed: int) -> Path:
        return self.logs / slug(key) / f"seed{seed}"

    def record_path(self, key: str, seed: int) -> Path:
        return self.records / slug(key) / f"seed{seed}.json"

    def source(self, ref: str, seed: int) -> tuple[str, int]:
        """The row ``stage/label`` a reference names and its seed: the same seed, or the row's first when it runs
        fewer (one teacher for all)."""
        seeds = self.seeds_of(ref)
        return ref, seed if seed in seeds else seeds[0]

    def needs(self, key: str, seed: int) -> list[tuple[str, int]]:
        return [self.source(m[2], seed) for o in self.rows[key]["overrides"] for m in REFERENCE.finditer(str(o))]

    def arguments(self, key: str, seed: int) -> list[str]:
        """The row's overrides with vars and references filled in (an earlier run's folder, relative to the
        repository, where runs start, when inside it; or a value of its record's metrics), and ``seed=<k>``."""
        def fill(match):
            ref, k = self.source(match[2], seed)
            if match[1] == "run":
                folder = self.folder(ref, k)
                return str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder)   # runs start in ROOT
            return f"{read_json(self.record_path(ref, k))['metrics'][match[3]]:.12g}"
        out = []
        for item in self.rows[key]["overrides"]:
            for var, value in self.vars.items():
                item = str(item).replace(f"${{{var}}}", value)
            out.append(REFERENCE.sub(fill, item))
        return [*out, f"seed={seed}"]

    def runs(self) -> list[tuple[str, int]]:
        return [(key, seed) for key in self.rows for seed in self.seeds_of(key)]


def flat(items: list) -> list[str]:
    """Overrides with nested lists (YAML anchors of shared overrides) flattened."""
    return [str(x) for item in items for x in (flat(item) if isinstance(item, list) else [item])]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def output_values(folder: Path, outputs: dict) -> dict:
    """The study's ``outputs`` read from a run folder's files: ``name: <glob>:<dotted key>`` of a YAML/JSON file,
    or ``<glob>:<column>`` of a CSV log (its values in step order)."""
    found = {}
    for name, spec in (outputs or {}).items():
        pattern, key = spec.rsplit(":", 1)
        files = sorted(folder.glob(pattern))
        if not files:
            continue
        if files[-1].suffix == ".csv":
            found[name] = logged_values(files[-1], key)
            continue
        value = yaml.safe_load(files[-1].read_text())
        for part in key.split("."):
            value = value[int(part)] if isinstance(value, list) else value.get(part) if value else None
        if value is not None:
            found[name] = value
    return found


def execute(args: list[str], folder: Path, threads: int) -> None:
    """``python run.py <args>`` writing into ``folder`` (its output beside it, ``<folder>.out``); raises on failure
    with run.py's ``error:`` line or the output's tail."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = folder.with_suffix(".out")
    with out.open("w") as log:
        code = subprocess.run([sys.executable, "run.py", *args, f"hydra.run.dir={folder}", *QUIET], cwd=ROOT,
                              env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        lines = out.read_text().splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        raise RuntimeError(errors[-1] if errors else f"exited {code}; see {out}:\n" + "\n".join(lines[-15:]))


def typed(folder: Path) -> list[str] | None:
    """The arguments a run folder was started with (Hydra's ``.hydra/overrides.yaml``, ``QUIET`` aside)."""
    path = folder / ".hydra" / "overrides.yaml"
    return [w for w in yaml.safe_load(path.read_text()) if w not in QUIET] if path.is_file() else None


def fingerprint(path: Path) -> str:
    """What tells one run's record from a redone run's: a hash of its metrics and wall time."""
    record = read_json(path)
    return hashlib.sha256(json.dumps([record["metrics"], record["wall_time_s"]], sort_keys=True).encode()).hexdigest()


def run_one(study: Study, key: str, seed: int, threads: int, ran: bool = False) -> str:
    """Runs (stage/label, seed) unless its record or metrics.json holds the same arguments and read the same records
    (their fingerprints, kept in the record and beside the folder; a record or folder from before they were kept:
    unless a run it reads ran in this call, ``ran``); writes its record. A folder of other arguments or reads is
    cleared first; one of the same is resumed. Returns what happened."""
    args, folder, path = study.arguments(key, seed), study.folder(key, seed), study.record_path(key, seed)
    reads = {f"{k}/seed{s}": fingerprint(study.record_path(k, s)) for k, s in study.needs(key, seed)}
    kept = folder.with_suffix(".reads.json")

    def same_reads(found: dict | None) -> bool:
        return found == reads if found is not None else not ran

    if path.is_file() and (old := read_json(path))["overrides"] == args and same_reads(old.get("reads")):
        return "recorded"
    done, fresh = folder / "metrics.json", same_reads(read_json(kept) if kept.is_file() else None)
    same_run = fresh and typed(folder) == args   # the folder holds this run (finished, or to resume)
    cached = same_run and done.is_file()
    if not cached:
        if folder.is_dir() and not same_run:
            shutil.rmtree(folder)   # another run's folder: its checkpoint must not be resumed
        atomic_write_text(kept, json.dumps(reads))
        execute(args, folder, threads)
    result = read_json(done)
    metrics = {**result["metrics"], **output_values(folder, study.spec.get("outputs"))}
    seconds = result["wall_time_s"] + metrics.get("time/before_resume_s", 0)   # a resumed fit: the whole run
    record = {"study": study.name, "stage": key.split("/", 1)[0], "label": study.rows[key]["label"], "seed": seed,
              "overrides": args, "command": shlex.join(["python", "run.py", *args]), "metrics": metrics,
              "reads": reads, "wall_time_s": seconds, "threads": threads, "cpu_h": round(seconds * threads / 3600, 4)}
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return "read back" if cached else f"ran in {seconds:.0f} s"


def run_study(study: Study, parallel: int = 2, threads: int = 1) -> dict:
    """Every run of the study, ``parallel`` at a time, each after the runs it reads; {(key, seed): outcome}."""
    events, outcomes = {run: threading.Event() for run in study.runs()}, {}

    def task(key, seed):
        outcome = "FAILED"
        try:
            needs = study.needs(key, seed)
            for need in needs:
                events[need].wait()
            if failed := [n for n in needs if outcomes[n].startswith("FAILED")]:
                raise RuntimeError(f"needs {failed[0][0]} seed {failed[0][1]}, which failed")
            outcome = run_one(study, key, seed, threads, any(outcomes[n].startswith("ran") for n in needs))
        except Exception as e:   # noqa: BLE001 - one failed run does not stop the others
            outcome = f"FAILED: {e}"
        finally:
            outcomes[(key, seed)] = outcome
            events[(key, seed)].set()
        print(f"[study] {study.name} {key} seed {seed}: {outcome}", flush=True)
        return outcome

    with ThreadPoolExecutor(parallel) as pool:   # submitted in stage order: what a run needs started before it
        futures = {run: pool.submit(task, *run) for run in study.runs()}
        return {run: f.result() for run, f in futures.items()}


def load_records(study: Study) -> dict[str, list[dict]]:
    """{stage/label: its records, by seed} of the study's planned runs whose record exists."""
    found = {}
    for key, seed in study.runs():
        path = study.record_path(key, seed)
        if path.is_file():
            found.setdefault(key, []).append(read_json(path))
    return found


def value(record: dict, metric: str):
    """A metric of the record's run, or a field of the record itself (``wall_time_s``, ``cpu_h``)."""
    return record["metrics"].get(metric, record.get(metric))


def cell(column: dict, records: dict[str, list[dict]], key: str) -> str:
    if "stat" in column:
        params = {k: v for k, v in column.items() if k not in ("header", "stat")}
        return getattr(stats, column["stat"])(records, key, **params)
    values = [v for r in records.get(key, []) if (v := value(r, column["metric"])) is not None]
    if not values:
        return "–"
    return AGGREGATES[column.get("agg", "mean_sd")](values, column.get("scale", 1), column.get("digits", 2))


def draw(study: Study) -> Path | None:
    """The study's picture, ``figure: {draw: <a function of bench/figures.py>, <its params>}``, from its records:
    docs/<name>.png beside the doc; None without a figure or a record."""
    spec, records = dict(study.spec.get("figure") or {}), load_records(study)
    if not spec or not any(records.values()):
        return None
    import figures

    out = study.doc.parent / f"{study.name}.png"
    getattr(figures, spec.pop("draw"))(records, study.table_keys, **spec).savefig(out, bbox_inches="tight")
    return out


def table(study: Study) -> str:
    """The section's text: the table (one row per row label of the table's stages), the regenerate line with the
    records' CPU hours, and a footnote naming the runs without a record."""
    spec, records = study.table, load_records(study)
    columns, stages = spec["columns"], spec["stages"]
    lines = [f"| {spec.get('label', 'row')} | " + " | ".join(c["header"] for c in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for key in study.table_keys:
        name = key.replace("/", ": ", 1) if len(stages) > 1 else key.split("/", 1)[1]
        lines.append(f"| {name} | " + " | ".join(cell(c, records, key) for c in columns) + " |")
    planned, missing = study.runs(), {}
    for k, s in (run for run in planned if not study.record_path(*run).is_file()):
        missing.setdefault(k, []).append(str(s))
    cpu_h = sum(r["cpu_h"] for rs in records.values() for r in rs)
    text = (f"Regenerate: `python bench/study.py {study.name}`; records in docs/records/{study.name}/, "
            f"{len(planned) - sum(map(len, missing.values()))} of {len(planned)} runs, {cpu_h:.2f} CPU hours.")
    if not any(records.values()):
        return f"No records yet. {text}"
    note = ("\n\nNo record yet for: " + "; ".join(f"{k} (seed {', '.join(s)})" for k, s in missing.items()) + "."
            if missing else "")
    return "\n".join(lines) + f"\n\n{text}{note}"


def write_section(study: Study, text: str) -> None:
    """Replaces what stands between the section's markers in the study's doc (the rest stays as it is)."""
    start, end = f"<!-- study:{study.section}:start -->", f"<!-- study:{study.section}:end -->"
    content = study.doc.read_text()
    if start not in content or end not in content:
        raise ConfigError(f"section={study.section}: {study.doc.name} has no {start} ... {end} markers; add them "
                          "where the table goes")
    head, rest = content.split(start, 1)
    atomic_write_text(study.doc, f"{head}{start}\n{text.rstrip()}\n{end}{rest.split(end, 1)[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="studies of bench/studies/ (their names) or study files")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change one of its vars")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP/MKL threads of each run")
    parser.add_argument("--seeds", help="comma-separated seeds instead of the study's")
    parser.add_argument("--table-only", action="store_true", help="run nothing: the table from the records")
    args = parser.parse_args(argv)
    failed = 0
    for name in args.names:
        try:
            study = Study(name, args.set, [int(s) for s in args.seeds.split(",")] if args.seeds else None)
            outcomes = {} if args.table_only else run_study(study, args.parallel, args.threads)
            text = table(study)
            write_section(study, text)
            if picture := draw(study):
                print(f"[study] {name}: {picture.relative_to(study.root)} drawn")
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{text}\n\n[study] {name}: section {study.section} of {study.doc.name} written")
        failed += sum(o.startswith("FAILED") for o in outcomes.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
