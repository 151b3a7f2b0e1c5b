"""``hydra/launcher=slurm``: hydra-submitit-launcher's job polling made to work on a cluster without accounting
storage too (a Hydra callback the launcher's config adds). submitit asks ``sacct`` for the jobs' states; where the
cluster keeps no accounting (``AccountingStorageType=accounting_storage/none``: sacct answers "Slurm accounting
storage is disabled"), it would warn on every poll and never see a job that ended without writing its result
(cancelled, killed). There the states come from ``squeue --states=all`` instead (it remembers ended jobs for the
cluster's ``MinJobAge``), said once in the log."""
import logging
import subprocess

from hydra.experimental.callback import Callback
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

log = logging.getLogger(__name__)
NO_ACCOUNTING = "accounting storage is disabled"


class QueueWatcher(SlurmInfoWatcher):
    """submitit's ``sacct`` watcher, falling back to ``squeue`` when sacct says accounting is disabled."""

    def __init__(self, delay_s: int = 60) -> None:
        super().__init__(delay_s)
        self.from_squeue: bool | None = None   # None: not asked yet

    def _make_command(self) -> list[str] | None:
        command = super()._make_command()
        if command is None:
            return None
        if self.from_squeue is None:
            probe = subprocess.run(command, capture_output=True, text=True)
            self.from_squeue = probe.returncode != 0 and NO_ACCOUNTING in probe.stderr
            if self.from_squeue:
                log.info("[slurm] sacct: this cluster keeps no accounting; job states from squeue --states=all")
        if not self.from_squeue:
            return command
        jobs = sorted({x.split("_")[0] for x in self._registered - self._finished})
        return ["squeue", "--noheader", "--states=all", "--format=%i|%T|%N", f"--jobs={','.join(jobs)}"]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        if self.from_squeue:   # sacct's header, for submitit's parser
            string = "JobID|State|NodeList\n" + (string if isinstance(string, str) else string.decode())
        return super().read_info(string)


class PollWithSqueueWithoutAccounting(Callback):
    """Before a sweep is submitted: submitit's SLURM jobs are polled by :class:`QueueWatcher`."""

    def on_multirun_start(self, config, **kwargs) -> None:
        if not isinstance(SlurmJob.watcher, QueueWatcher):
            SlurmJob.watcher = QueueWatcher()
