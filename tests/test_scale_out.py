"""Scale-out as users type it: Optuna sweeps (hydra-optuna-sweeper), jobs through submitit (local here, SLURM on a
cluster), wandb runs and groups per sweep, images and run summaries in wandb."""
import json
import subprocess
import sys

import pytest
import yaml
from helpers import FAST, ROOT, compose_config, run_cli
from omegaconf import OmegaConf
from wandb_records import history, image_keys, offline_runs, run_info, summary

optuna = pytest.importorskip("optuna", reason="the sweep extra is not installed: pip install -e '.[sweep]'")
submitit = pytest.importorskip("submitit", reason="the sweep extra is not installed: pip install -e '.[sweep]'")

TINY = [*FAST, "trainer.max_epochs=1"]


def metrics_of(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


@pytest.mark.e2e
@pytest.mark.slow
def test_optuna_sweep_runs_trials_reports_the_best_and_resumes(tmp_path):
    proc = run_cli(["hparams_search=cckd_optuna", "hydra.sweeper.n_trials=3", "logger=wandb", *TINY], tmp_path,
                   multirun=True)
    jobs = proc.run_dirs
    assert [j.name for j in jobs] == ["0", "1", "2"] and len({j.parent for j in jobs}) == 1
    sweep = jobs[0].parent
    values = [metrics_of(j)["val/acc"] for j in jobs]
    overrides = [yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text()) for j in jobs]
    assert len({tuple(o) for o in overrides}) == 3  # three different points of the search space
    assert all(any(o.startswith("loss.beta=") for o in job) for job in overrides)

    # the best trial is named in the output and in optimization_results.yaml, and it is the best job's value
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(values))
    assert "Best parameters" in proc.stdout + proc.stderr
    best_job = jobs[values.index(max(values))]
    best_overrides = yaml.safe_load((best_job / ".hydra" / "overrides.yaml").read_text())
    assert f"loss.beta={best['best_params']['loss.beta']}" in best_overrides

    # one wandb run per trial, all in the sweep's group
    runs = offline_runs(sweep)
    assert len(runs) == 3
    infos = [run_info(r) for r in runs]
    assert {i["group"] for i in infos} == {f"cckd/{sweep.name}"} and len({i["name"] for i in infos}) == 3

    # a stopped sweep resumes: the study in <sweep>/optuna.db keeps its trials, only the missing ones run (n_trials
    # is the study's size), best over all
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    assert len(optuna.load_study(study_name="cckd_optuna", storage=storage).trials) == 3
    more = run_cli(["hparams_search=cckd_optuna", "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage.folder={sweep}",
                    *TINY], tmp_path, multirun=True)
    study = optuna.load_study(study_name="cckd_optuna", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    new_value = metrics_of(more.run_dir)["val/acc"]
    resumed_best = yaml.safe_load((more.run_dir.parent / "optimization_results.yaml").read_text())
    assert resumed_best["best_value"] == pytest.approx(max(values + [new_value]))


def test_dafl_optuna_search_space_composes(tmp_path):
    cfg = compose_config(["experiment=dafl_digits", "hparams_search=dafl_optuna"], tmp_path)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert set(sweeper.params) == {"loss.oh", "loss.ie", "loss.a", "optimizer.lr",
                                   "generator_optimizer.lr"}
    assert cfg.optimized_metric == "val/acc" and sweeper.storage.folder == cfg.hydra.sweep.dir
    for key in sweeper.params:  # every searched key exists in the composed job config
        assert OmegaConf.select(cfg, key) is not None, key


@pytest.mark.e2e
@pytest.mark.slow
def test_submitit_local_launcher_runs_two_jobs(tmp_path, monkeypatch):
    # submitit's job processes import the project: installed (pip install -e .) for users, PYTHONPATH here
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    proc = run_cli(["hydra/launcher=submitit_local", "method=supervised", "model=lenet5", "seed=1,2", *TINY],
                   tmp_path, multirun=True)
    assert [j.name for j in proc.run_dirs] == ["0", "1"]
    for job in proc.run_dirs:
        assert metrics_of(job)["test/acc"] > 0.3
        assert (job / "checkpoints" / "last.ckpt").is_file()
    assert len(list(proc.run_dirs[0].parent.glob(".submitit/*/*_log.out"))) == 2  # submitit's own job logs


@pytest.mark.e2e
def test_slurm_launcher_composes_with_what_the_user_sets(tmp_path):
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                 "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=600", "hydra.launcher.mem_gb=200"]
    cfg = compose_config(overrides, tmp_path)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["nodes"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (2, 4, 4)
    assert (launcher["partition"], launcher["timeout_min"], launcher["mem_gb"]) == ("gpu", 600, 200)
    assert launcher["signal_delay_s"] > 0 and launcher["max_num_timeout"] > 0
    assert (cfg.trainer.num_nodes, cfg.trainer.devices, cfg.trainer.strategy) == (2, 4, "ddp")

    # the sbatch script submitit writes: one task per GPU, the requeue signal before the time limit
    from submitit.slurm.slurm import _make_sbatch_string

    script = _make_sbatch_string(command="python run.py", folder=str(tmp_path), job_name="cckd",
                                 partition=launcher["partition"], time=launcher["timeout_min"],
                                 nodes=launcher["nodes"], ntasks_per_node=launcher["tasks_per_node"],
                                 gpus_per_node=launcher["gpus_per_node"], cpus_per_task=launcher["cpus_per_task"],
                                 mem=f"{launcher['mem_gb']}GB", signal_delay_s=launcher["signal_delay_s"])
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--time=600",
                 f"--signal=USR2@{launcher['signal_delay_s']}"):
        assert f"#SBATCH {line}" in script

    # --cfg hydra prints it as composed from the command line
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), *overrides, "--cfg", "hydra"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "partition: gpu" in out.stdout and "tasks_per_node: ${trainer.devices}" in out.stdout


@pytest.mark.e2e
def test_wandb_gets_images_and_a_summary_of_test_metrics_flops_and_params(tmp_path):
    """CCKD's correlation heatmap and DAFL's generated grid reach wandb as images; the run summary holds the test
    metrics, FLOPs and parameters (the search scatter: tests/test_fault_tolerance.py)."""
    cckd = run_cli(["logger=wandb", "module.heatmap_every_n_epochs=1", "+trainer.limit_train_batches=4", *TINY],
                   tmp_path / "cckd")
    dafl = run_cli(["experiment=dafl_digits", "logger=wandb", "datamodule.iterations_per_epoch=3", *TINY],
                   tmp_path / "dafl")
    for proc, image in ((cckd, "train/correlation"), (dafl, "train/generated")):
        (run_file,) = offline_runs(proc.run_dir)
        assert image in image_keys(run_file)
        pngs = list(run_file.parent.glob(f"files/media/images/{image}_*.png"))
        assert pngs and all(p.stat().st_size > 100 for p in pngs)
        final = summary(run_file)
        expected = metrics_of(proc.run_dir)
        for key in ("test/acc", "model/flops", "model/params"):
            assert final[key] == pytest.approx(expected[key]), key
        assert final["model/params"] > 1000 and 0 <= final["test/acc"] <= 1
        assert any("test/acc" in row for row in history(run_file))
