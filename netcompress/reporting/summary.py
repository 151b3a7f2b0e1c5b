"""Lightning's model summary without its FLOPs column and total: they read 0 unless a module defines an
``example_input_array``, and every run prints and logs its own count instead (``[model] ... FLOPs``,
``model/flops`` = multiply-adds, the papers' convention). Formatted here from the columns Lightning's public
``ModelSummary.summarize`` hook receives."""
import logging

from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count

log = logging.getLogger(__name__)


class ModelSummary(LightningModelSummary):
    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes=None,
                  total_flops=None, **summarize_kwargs) -> None:   # Lightning < 2.5 passes no total_flops
        log.info("\n" + summary_table(summary_data, total_parameters, trainable_parameters, model_size,
                                      total_training_modes or {}))


def summary_table(summary_data, total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes: dict) -> str:
    """The layer table (every column but FLOPs) and the parameter totals."""
    columns = [(name, [str(v) for v in values]) for name, values in summary_data if name != "FLOPs"]
    widths = [max(len(name), *map(len, values), 1) for name, values in columns]
    lines = [" | ".join(name.ljust(w) for (name, _), w in zip(columns, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    for i in range(len(columns[0][1]) if columns else 0):
        lines.append(" | ".join(values[i].ljust(w) for (_, values), w in zip(columns, widths, strict=True)))
    lines.append("-" * len(lines[0]))
    counts = ((trainable_parameters, "Trainable params"),
              (total_parameters - trainable_parameters, "Non-trainable params"),
              (total_parameters, "Total params"))
    lines += [f"{get_human_readable_count(n):<10} {label}" for n, label in counts]
    lines.append(f"{model_size:<10.3f} Total estimated model params size (MB)")
    lines += [f"{total_training_modes.get(mode, 0):<10} Modules in {mode} mode" for mode in ("train", "eval")]
    return "\n".join(lines)
