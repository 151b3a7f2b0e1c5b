"""Generated vs real inputs of a DAFL run: statistics that show polarity, sparsity, stripes and noise, and a picture
of generated images next to real ones.

    python bench/dafl_images.py <dafl run dir> [<another run dir> ...] [--data-root ...] [--out docs/x.png]

For each run it rebuilds the generator and the data from the run's own config (``.hydra/config.yaml``; ``--data-root``
replaces ``data.root``), loads ``checkpoints/last.ckpt``, draws 512 images (the generator in training mode, as it is
used) and compares them with 512 real test images (normalized as the teacher sees them):

- skew: third standardized moment of the pixels. Real digits are dark background with few bright strokes: positive.
  Negative = inverted polarity (bright background, dark strokes).
- border - center: mean of the 3-pixel border minus mean of the central 12x12 (real: the background is darker).
- bright: fraction of pixels above mean + 0.5 std (sparsity of the strokes).
- hf: share of the spectral power above a quarter of the sampling frequency (noise, checkerboards).
- v/h gradient: mean squared vertical over horizontal neighbour difference (> 1: horizontal stripes).
"""
import argparse
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision.utils import make_grid, save_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the project's packages, from any folder
STATS = ("mean", "std", "skew", "border - center", "bright", "hf", "v/h gradient")


def image_stats(x: torch.Tensor) -> dict[str, float]:
    """The statistics of a batch of normalized images (N, C, H, W) named in STATS (see the module doc)."""
    x = x.float()
    m, s = x.mean(), x.std()
    h = x.shape[-1]
    border = torch.cat([x[..., :3, :].flatten(1), x[..., -3:, :].flatten(1), x[..., :, :3].flatten(1),
                        x[..., :, -3:].flatten(1)], 1).mean()
    c0, c1 = h // 2 - 6, h // 2 + 6
    power = torch.fft.fftshift(torch.fft.fft2(x - x.mean(dim=(-1, -2), keepdim=True)), dim=(-2, -1)).abs() ** 2
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(h) - h // 2, indexing="ij")
    high = (yy ** 2 + xx ** 2).float().sqrt() > h / 4
    vertical = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    values = (m, s, (((x - m) / s) ** 3).mean(), border - x[..., c0:c1, c0:c1].mean(), (x > m + 0.5 * s).float().mean(),
              power[..., high].sum() / power.sum(), vertical / horizontal)
    return {name: float(v) for name, v in zip(STATS, values, strict=True)}


def load_run(run_dir: Path, data_root: str | None, n: int = 512):
    """(generated, real) images of a DAFL run: ``n`` each."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    if data_root is not None:
        cfg.data.root = data_root
    generator = instantiate(cfg.generator)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    generator.load_state_dict({k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")})
    torch.manual_seed(0)
    with torch.no_grad():
        generated = generator.train()(torch.randn(n, generator.latent_dim))
    data = instantiate(cfg.data)
    data.setup("test")
    real = torch.stack([data.test_set[i][0] for i in range(min(n, len(data.test_set)))])
    return generated, real


def side_by_side(generated: torch.Tensor, real: torch.Tensor, n: int = 32) -> torch.Tensor:
    """Generated (left) and real (right) grids, 4 x 8 each, on one common gray scale per side (not per image, so
    polarity and contrast stay visible)."""
    def grid(x):
        x = x[:n]
        x = (x - x.min()) / (x.max() - x.min() + 1e-8)
        return make_grid(x, nrow=8, pad_value=1.0)
    left, right = grid(generated), grid(real)
    gap = torch.ones(left.shape[0], left.shape[1], 8)
    return torch.cat([left, gap, right], dim=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data-root")
    parser.add_argument("--out", type=Path, help="PNG: one row per run, generated | real")
    parser.add_argument("--labels", nargs="+", help="names of the runs in the table (default: their folders)")
    args = parser.parse_args()
    print("| images | " + " | ".join(STATS) + " |\n|---|" + "---|" * len(STATS))
    rows = []
    labels = args.labels or [run_dir.name for run_dir in args.runs]
    for i, (run_dir, label) in enumerate(zip(args.runs, labels, strict=True)):
        generated, real = load_run(run_dir, args.data_root)
        if i == 0:
            print("| real (test) | " + " | ".join(f"{v:.2f}" for v in image_stats(real).values()) + " |")
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in image_stats(generated).values()) + " |")
        rows.append(side_by_side(generated, real))
    if args.out:
        save_image(torch.cat(rows, dim=1), args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
