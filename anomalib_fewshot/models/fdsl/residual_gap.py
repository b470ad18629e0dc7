"""How far the pseudo-anomaly head's training residuals are from the residuals of new normal images.

FDSL's head scores residuals ``|f − nn(f)|`` to a bank of the k shots. The pseudo-anomaly head trains on views of
the shots themselves, so unless the bank leaves the view's own shot out (``train_bank: leave_one_out``) a normal
training token is matched against (almost) itself, while a new normal image never is. This prints the mean residual
norm per level of

- pseudo-sample normal tokens (the training views, no anomaly) against the full bank (``train_bank: all``) and
  against the bank without their own shot (``leave_one_out``, k >= 2), and
- normal images of an evaluation folder (a development split's ``test/good``) against the full bank,

so the two can be compared without training anything. Development data only::

    python -m anomalib_fewshot.models.fdsl.residual_gap --category mt --k-shot 4 --seed 0 \
        --root benchmark_results/dev_splits/dev-defects-1/magnetic_tile      (--profile fdsl_lite by default)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from anomalib_fewshot.components.anomalies import random_flip_rotate
from anomalib_fewshot.components.io.images import read_image
from anomalib_fewshot.components.lifecycle.fewshot import list_images, select_shots
from anomalib_fewshot.models.fdsl.lightning_model import Fdsl
from anomalib_fewshot.models.fdsl.torch_model import FdslModel


def _load(paths: list[str], size: int) -> torch.Tensor:
    images = [read_image(p)[None] for p in paths]
    resize = {"size": (size, size), "mode": "bilinear", "antialias": True}
    return torch.cat([torch.nn.functional.interpolate(image, **resize) for image in images])


@torch.no_grad()
def mean_residual_norms(net: FdslModel, images: torch.Tensor, banks: list[torch.Tensor]) -> list[float]:
    """Mean L2 norm of the residual tokens of ``images`` against ``banks``, per level."""
    residuals = net.residuals(net.level_tokens(images), banks)
    return [float(r.norm(dim=-1).mean()) for r in residuals]


def residual_gap(
    model: Fdsl, shots: torch.Tensor, normals: torch.Tensor, views_per_shot: int = 8, seed: int = 0
) -> dict[str, list[float]]:
    """Per-level mean residual norms of training views (full and leave-one-out banks) and of new normal images.

    Args:
        model: an FDSL module with its backbone weights loaded.
        shots: ``(k, 3, S, S)`` shots in ``[0, 1]``; the banks are built from them.
        normals: ``(N, 3, S, S)`` normal images that are not shots.
        views_per_shot: training views (flip and rotation as the pseudo-anomaly head makes them) per shot.
        seed: seed of the views.

    """
    net = model.model
    net.prepare(shots)
    generator = torch.Generator().manual_seed(seed)
    rotation = float(model.hparams.pseudo_rotation) or None
    full, left_out = [], []
    for index, shot in enumerate(shots):
        views = torch.stack([random_flip_rotate(shot, generator, rotation=rotation) for _ in range(views_per_shot)])
        full.append(mean_residual_norms(net, views, net.banks()))
        left_out.append(mean_residual_norms(net, views, net.banks_without_shot(index, len(shots))))
    rows = {
        "training views, bank of all shots (train_bank: all)": torch.tensor(full).mean(0).tolist(),
        "new normal images, bank of all shots (inference)": mean_residual_norms(net, normals, net.banks()),
    }
    if len(shots) > 1:
        rows["training views, bank without their shot (leave_one_out)"] = torch.tensor(left_out).mean(0).tolist()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the residual gap of a profile on an MVTec-layout root's seeded shots and normal test images."""
    from anomalib_fewshot.config import model_init_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="MVTec-layout root (a development split)")
    parser.add_argument("--category", required=True)
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="shot seed (the runner's)")
    parser.add_argument("--profile", default="fdsl_lite")
    parser.add_argument("--normals", type=int, default=32, help="normal images of test/good to score (sorted)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = Fdsl(**model_init_args(args.profile, k_shot=args.k_shot, few_shot_seed=args.seed, lfe=False)).eval()
    model.model.features.load_weights()
    folder = Path(args.root) / args.category
    size = int(model.hparams.image_size)
    shots = _load(select_shots(list_images(folder / "train" / "good"), args.k_shot, args.seed), size)
    normals = _load(list_images(folder / "test" / "good")[: args.normals], size)
    rows = residual_gap(model, shots, normals)
    levels = len(next(iter(rows.values())))
    print(f"{args.profile}, {folder}, k = {args.k_shot}, seed {args.seed}: mean residual norm per level")
    print("| tokens | " + " | ".join(f"level {i}" for i in range(levels)) + " |")
    print("|---|" + "---|" * levels)
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
