"""Lightning's model summary without its FLOPs column and total: they read 0 unless a module defines an
``example_input_array``, and every run prints and logs its own count instead (``[model] ... FLOPs``,
``model/flops`` = multiply-adds, the papers' convention)."""
import logging

from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

log = logging.getLogger(__name__)


class ModelSummary(LightningModelSummary):
    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:
        columns = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                      total_flops, *columns)
        log.info("\n" + table.rsplit("\n", 1)[0])   # the last line is Lightning's "Total Flops"
