"""Sizes of the CCKD loss terms on one MNIST batch, for each scale of the CC term (docs/parity.md, "CC scale"):
what ``beta`` must be for the CC term to weigh as much as KD, with the paper's form (normalized, mean over
the n x n entries), its ``reduction=sum`` and torchdistill's unnormalized, unsquared form.

    python bench/cckd_magnitudes.py --data-root ../shared/data/mnist-dev --teacher <LeNet-5 checkpoint> \
        [--student <a CCKD run's last.ckpt>]

The student is a fresh LeNet-5-half (or the ``--student`` CCKD run's network and embeddings); every form is
evaluated on the same 64 test images with the same embeddings. Prints a markdown table.
"""
import argparse
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import criterion  # noqa: E402

from lightning_modules.teacher import build_teacher  # noqa: E402
from netcompress.core import load_checkpoint  # noqa: E402
from netcompress.losses.correlation import correlation_congruence_loss  # noqa: E402
from netcompress.networks.lenet import LeNet5, lenet5_half  # noqa: E402

FORMS = {  # label: (normalize, variant, reduction)
    "paper: normalized, squared, mean over n^2 (loss=cckd)": (True, "paper", "mean"),
    "paper form, reduction=sum": (True, "paper", "sum"),
    "unnormalized, squared, mean over n^2": (False, "paper", "mean"),
    "torchdistill: unnormalized, unsquared Frobenius / n^2": (False, "torchdistill", "mean"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", help="a method=cckd run's checkpoint (network and embeddings)")
    args = parser.parse_args()
    torch.manual_seed(0)
    dm = instantiate(OmegaConf.load(ROOT / "conf" / "data" / "mnist.yaml"), root=args.data_root)
    x, y = next(iter(torch.utils.data.DataLoader(dm.build(train=False, augment=False), batch_size=64)))
    teacher = build_teacher(LeNet5(), args.teacher)
    student, loss = lenet5_half(), criterion("cckd")(student_dim=60, teacher_dim=120)
    if args.student:
        state = load_checkpoint(args.student, "--student")["state_dict"]
        student.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        loss.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("criterion.")})
    with torch.no_grad():
        logits, f_s = student(x, return_features=True)
        t_logits, f_t = teacher(x, return_features=True)
        _, terms = loss(logits, t_logits, y, f_s, f_t)
        e_s, e_t = loss.embed(f_s, f_t)
        kd = terms["kd"].item()
        print(f"student: {'trained CCKD run' if args.student else 'fresh LeNet-5-half'}; CE {terms['ce']:.3g}, "
              f"T^2 KD (T {loss.temperature:g}) {kd:.3g}\n")
        print("| CC form | CC value | beta that makes beta x CC = KD |\n|---|---|---|")
        for label, (normalize, variant, reduction) in FORMS.items():
            cc = correlation_congruence_loss(e_s, e_t, normalize=normalize, variant=variant,
                                             reduction=reduction).item()
            print(f"| {label} | {cc:.3g} | {kd / cc:.3g} |")


if __name__ == "__main__":
    main()
