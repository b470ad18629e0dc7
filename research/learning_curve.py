"""Learning curves on the development split: choose a schedule without test images.

:class:`LearningCurve` is a Lightning callback that, every ``every_n_epochs`` training epochs (and after the last),
scores the model's raw outputs on the test folder of an MVTec-layout root and appends image AUROC, pixel AUROC,
AUPRO and F1-max to a CSV, then draws them against the epoch (PNG). Point it at a development split
(:mod:`anomalib_fewshot.benchmark.dev`); it works on any root, but a schedule chosen on test images is not a choice
this project makes.

    python -m research.learning_curve --profile pcsnet_lite --root DEV_ROOT --category bottle
        --k-shot 1 --seed 0 --every 5 --output docs/measurements/curves/pcsnet_bottle_k1   (one line)

``DEV_ROOT`` is a built development split (``benchmark_results/dev_splits/<version>/<dataset>``): the model trains on
its usual seeded shots (the split's ``train/good`` holds every training image) and is scored on the development
images; the fit's own validation pass reads that folder too. Before each evaluation the model's
``finish_fit`` runs (statistics a fit computes from its training pool after training, e.g. DFD's score
normalisers), so every point scores the model as it would be if training stopped there.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_fewshot.benchmark.job import EVAL_BATCH_SIZE, compute_metrics, evaluation_datamodule, raw_predictions
from anomalib_fewshot.benchmark.store import write_rows

CURVE_METRICS = ("image_auroc", "pixel_auroc", "aupro")


class LearningCurve(Callback):
    """Score the model on a fixed evaluation folder every ``every_n_epochs`` epochs; write ``curve.csv/png``.

    Args:
        root: MVTec-layout root whose test folder is scored (a development split).
        category: its category.
        output: folder of ``curve.csv`` and ``curve.png``.
        every_n_epochs: evaluation period (the last epoch is always scored).
        batch_size: evaluation batch size.

    """

    def __init__(
        self,
        root: str | Path,
        category: str,
        output: str | Path,
        every_n_epochs: int = 5,
        batch_size: int = EVAL_BATCH_SIZE,
    ):
        super().__init__()
        if every_n_epochs < 1:
            msg = f"every_n_epochs must be >= 1, got {every_n_epochs}"
            raise ValueError(msg)
        self.root, self.category, self.output = Path(root), category, Path(output)
        self.every_n_epochs, self.batch_size = every_n_epochs, batch_size
        self.rows: list[dict[str, Any]] = []
        self._loader: Any = None

    def _dataloader(self, model: LightningModule) -> Any:
        if self._loader is None:
            module = evaluation_datamodule(model, self.root, self.category, batch_size=self.batch_size)
            self._loader = module.test_dataloader()
        return self._loader

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Score the model after every ``every_n_epochs``-th and after the last epoch."""
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs and epoch != trainer.max_epochs:
            return
        modes = [(module, module.training) for module in pl_module.modules()]
        finish = getattr(pl_module, "finish_fit", None)
        if callable(finish):
            finish()
        pl_module.eval()
        try:
            metrics = compute_metrics(*raw_predictions(pl_module, self._dataloader(pl_module)))
        finally:
            for module, training in modes:
                module.training = training
        self.rows.append(
            {"epoch": epoch, "global_step": trainer.global_step, **{k: round(v, 4) for k, v in metrics.items()}}
        )
        write_rows(self.output / "curve.csv", self.rows)
        self._plot()

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(5, 3.2))
        epochs = [row["epoch"] for row in self.rows]
        for name in CURVE_METRICS:
            axis.plot(epochs, [row[name] for row in self.rows], marker="o", label=name)
        axis.set_xlabel("epoch")
        axis.set_ylabel("score on the evaluation folder")
        axis.set_title(f"{self.root.name} / {self.category}", fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        figure.tight_layout()
        self.output.mkdir(parents=True, exist_ok=True)
        figure.savefig(self.output / "curve.png", dpi=110)
        plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    """Fit a profile on the seeded shots of ``--root`` and write its learning curve."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", required=True, help="model config in configs/model (e.g. pcsnet_lite)")
    parser.add_argument("--root", type=Path, required=True, help="a development split root (MVTec layout)")
    parser.add_argument("--category", required=True)
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=5, help="score every N epochs")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    parser.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override one of the profile's init_args (VALUE read as YAML), e.g. --set noise_scale=rms noise_std=0.1",
    )
    parser.add_argument("--output", type=Path, required=True, help="folder of curve.csv and curve.png")
    parser.add_argument(
        "--work", type=Path, default=None,
        help="the fit's folder (checkpoint; default benchmark_results/curves/<output folder name>)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    import yaml
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    from anomalib_fewshot.config import model_config_path, model_init_args, parse_set_overrides
    from anomalib_fewshot.errors import InvalidArgumentError
    from anomalib_fewshot.models import REGISTRY

    class_path = yaml.safe_load(model_config_path(args.profile).read_text())["model"]["class_path"]
    name = class_path.rsplit(".", 1)[-1]
    if name not in REGISTRY:
        msg = f"--profile {args.profile}: {class_path} is not a registered model ({', '.join(REGISTRY)})"
        raise SystemExit(msg)
    overrides: dict[str, Any] = {"k_shot": args.k_shot, "few_shot_seed": args.seed}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    try:
        overrides.update(parse_set_overrides(args.set))
    except InvalidArgumentError as error:
        raise SystemExit(str(error)) from None
    model = REGISTRY[name].model_class(**model_init_args(args.profile, **overrides))
    torch.manual_seed(args.seed)
    curve = LearningCurve(args.root, args.category, args.output, every_n_epochs=args.every)
    engine = Engine(
        default_root_dir=args.work or Path("benchmark_results/curves") / args.output.name,
        logger=False,
        callbacks=[curve],
        enable_progress_bar=False,
        limit_val_batches=1,
    )
    engine.fit(model, datamodule=MVTecAD(root=args.root, category=args.category, num_workers=0))
    print((args.output / "curve.csv").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
