"""FDSL stage 1: train the class-agnostic scoring head on an auxiliary annotated dataset.

The head (per-level classifiers + NAM) learns to score residuals ``|f − nn(f)|`` from real anomalies with pixel
masks: the *test* split of any anomalib datamodule (one or several categories). Each category's reference bank
is built from ``reference_k`` (10) seeded normal images of its own *train* split, and every training image is
matched against the bank of its category. Augmentation happens in pixel space before normalisation: a 2×2 mosaic
of four images of one category (MVTec recipe) and/or a random crop that keeps anomaly pixels (VisA recipe).

The result is a head-weights file (:mod:`.head_weights`) that ``Fdsl(head_weights=...)`` loads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from anomalib_fewshot.components.io.images import read_image
from anomalib_fewshot.components.lifecycle.arguments import check_arguments
from anomalib_fewshot.components.lifecycle.fewshot import select_shots
from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.models.fdsl.head_weights import save_head_weights
from anomalib_fewshot.models.fdsl.loss import FdslLoss, head_loss
from anomalib_fewshot.models.fdsl.torch_model import FdslModel

logger = logging.getLogger(__name__)

HeadAugment = Literal["none", "mosaic", "crop", "mosaic_crop"]


# ---------------------------------------------------------------------- auxiliary data
def _resize(image: torch.Tensor, size: int, mask: bool = False) -> torch.Tensor:
    mode = {"mode": "nearest"} if mask else {"mode": "bilinear", "align_corners": False, "antialias": True}
    return F.interpolate(image[None].float(), size=(size, size), **mode)[0]


class AnnotatedSplit(Dataset):
    """Test-split images with masks of several categories, stored as uint8, with pixel-space augmentation.

    Args:
        images: ``(N, 3, S, S)`` uint8.
        masks: ``(N, S, S)`` bool.
        categories: category index of every image.
        augment: ``"none"``, ``"mosaic"`` (p = ``mosaic_rate``), ``"crop"`` (p = ``crop_rate``) or ``"mosaic_crop"``.
        mosaic_rate: probability of a 2×2 mosaic of four images of the same category (0.3 in the MVTec recipe).
        crop_rate: probability of a crop (0.6 in the VisA recipe): normal images a random ``crop_large`` crop
            with probability 0.5; anomalous ones a crop containing anomaly pixels, ``crop_small`` with probability
            0.6, else ``crop_large`` (fractions of the side: 50/518 and 100/518), resized back.
        seed: seed of the augmentation stream.

    """

    def __init__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        categories: Sequence[int],
        augment: HeadAugment = "none",
        mosaic_rate: float = 0.3,
        crop_rate: float = 0.6,
        crop_small: float = 50 / 518,
        crop_large: float = 100 / 518,
        seed: int = 111,
    ) -> None:
        check_arguments(type(self).__init__, locals())
        self.images = images
        self.masks = masks
        self.categories = torch.as_tensor(list(categories), dtype=torch.long)
        self.augment = augment
        self.mosaic_rate = mosaic_rate
        self.crop_rate = crop_rate
        self.crop_small = crop_small
        self.crop_large = crop_large
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def _rand(self) -> float:
        return float(torch.rand(1, generator=self.generator))

    def _mosaic(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        same = torch.nonzero(self.categories == self.categories[index]).flatten()
        picks = [index, *same[torch.randint(len(same), (3,), generator=self.generator)].tolist()]
        size = self.images.shape[-1]
        half = size // 2
        image = torch.zeros(3, size, size)
        mask = torch.zeros(size, size)
        for slot, pick in enumerate(picks):
            top, left = (slot // 2) * half, (slot % 2) * half
            image[:, top : top + half, left : left + half] = _resize(self.images[pick].float() / 255, half)
            mask[top : top + half, left : left + half] = _resize(self.masks[pick][None].float(), half, mask=True)[0]
        return image, mask

    def _crop(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = image.shape[-1]
        if mask.any():
            side = self.crop_small if self._rand() < 0.6 else self.crop_large
            crop = max(2, round(side * size))
            ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
            pick = int(torch.randint(len(ys), (1,), generator=self.generator))
            # a window that contains the chosen anomaly pixel, placed uniformly among those that do
            top = int(ys[pick]) - int(torch.randint(crop, (1,), generator=self.generator))
            left = int(xs[pick]) - int(torch.randint(crop, (1,), generator=self.generator))
        else:
            if self._rand() >= 0.5:
                return image, mask
            crop = max(2, round(self.crop_large * size))
            top = int(torch.randint(size - crop + 1, (1,), generator=self.generator))
            left = int(torch.randint(size - crop + 1, (1,), generator=self.generator))
        top = min(max(top, 0), size - crop)
        left = min(max(left, 0), size - crop)
        image = _resize(image[:, top : top + crop, left : left + crop], size)
        mask = _resize(mask[None, top : top + crop, left : left + crop], size, mask=True)[0]
        return image.clamp(0, 1), mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        category = int(self.categories[index])
        if self.augment in ("mosaic", "mosaic_crop") and self._rand() < self.mosaic_rate:
            image, mask = self._mosaic(index)
        else:
            image, mask = self.images[index].float() / 255, self.masks[index].float()
        if self.augment in ("crop", "mosaic_crop") and self._rand() < self.crop_rate:
            image, mask = self._crop(image, mask)
        return image, mask, category


def collect_annotated_split(datamodule: Any, image_size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The test split of an anomalib datamodule as uint8 images, bool masks and paths (resized to ``image_size``)."""
    datamodule.setup()
    dataset = getattr(datamodule, "test_data", None)
    if dataset is None or len(dataset) == 0:
        msg = f"the datamodule {type(datamodule).__name__} has no test split to train the FDSL head on"
        raise InvalidArgumentError(msg)
    images, masks, paths = [], [], []
    for index in range(len(dataset)):
        item = dataset[index]
        image = item.image.float()
        if image.max() > 1.0:
            image = image / 255.0
        mask = item.gt_mask if item.gt_mask is not None else torch.zeros(image.shape[-2:])
        images.append((_resize(image, image_size).clamp(0, 1) * 255).round().to(torch.uint8))
        masks.append(_resize(mask.float().reshape(1, *mask.shape[-2:]), image_size, mask=True)[0] > 0.5)
        paths.append(str(item.image_path))
    return torch.stack(images), torch.stack(masks), paths


def reference_images(datamodule: Any, k: int, seed: int, image_size: int) -> torch.Tensor:
    """``k`` seeded, distinct normal images of the datamodule's train split, ``(k, 3, S, S)`` in ``[0, 1]``."""
    samples = datamodule.train_data.samples
    normal = samples[samples["label_index"] == 0] if "label_index" in samples.columns else samples
    paths = normal["image_path"].astype(str).tolist()
    chosen = select_shots(paths, min(k, len(paths)), seed)
    images = [_resize(read_image(p), image_size).clamp(0, 1) for p in chosen]  # 16-bit safe, names a bad file
    return torch.stack(images)


class HeadTrainer(pl.LightningModule):
    """Lightning module of stage 1: trains an :class:`FdslModel`'s heads and NAM; the backbone stays frozen.

    Args:
        model: the FDSL torch model (its backbone weights already loaded).
        category_banks: per category, the per-level reference banks.
        lr: Adam learning rate (1e-3).
        betas: Adam betas ((0.5, 0.999)).

    """

    def __init__(
        self,
        model: FdslModel,
        category_banks: Sequence[Sequence[torch.Tensor]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.5, 0.999),
    ) -> None:
        super().__init__()
        self.model = model
        self.category_banks = [list(b) for b in category_banks]
        self.loss = FdslLoss()
        self.lr = lr
        self.betas = tuple(betas)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over the heads and the NAM."""
        params = list(self.model.heads.parameters())
        if self.model.nam is not None:
            params += list(self.model.nam.parameters())
        return torch.optim.Adam(params, lr=self.lr, betas=self.betas)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], *args: Any) -> torch.Tensor:
        """Focal + Dice on raw and NAM maps of every level."""
        del args
        images, masks, categories = batch
        banks = [[b.to(self.device) for b in self.category_banks[int(c)]] for c in categories]
        total = head_loss(self.model, self.loss, images, masks, banks)
        self.log("head_loss", total, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        return total


def pretrain_head(
    datamodules: Sequence[Any],
    output: str | Path,
    model_kwargs: dict[str, Any] | None = None,
    epochs: int = 5,
    batch_size: int = 8,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.5, 0.999),
    reference_k: int = 10,
    augment: HeadAugment = "mosaic",
    seed: int = 111,
    max_steps: int = -1,
    progress: bool = True,
) -> Path:
    """Train FDSL's head on the annotated test splits of ``datamodules`` and write a head-weights file.

    Args:
        datamodules: anomalib datamodules (e.g. ``MVTecAD(category=c)`` for several ``c``, ``Folder`` with masks).
        output: the head-weights file to write (atomically; an interrupted run never leaves a partial file).
        model_kwargs: :class:`FdslModel` arguments (backbone, layers, image_size, head_dims, nam, ...); use the
            same values as the ``Fdsl`` model that will load the file.
        epochs: training epochs (5 for the VisA-trained head used on MVTec AD; the spec reads 11 for the other
            direction).
        batch_size: images per step (8).
        lr: Adam learning rate (1e-3).
        betas: Adam betas (0.5, 0.999).
        reference_k: normal images per category in the reference bank (10).
        augment: pixel-space augmentation: ``"mosaic"`` (MVTec recipe), ``"crop"`` (VisA recipe), both or none.
        seed: training seed (111).
        max_steps: stop after this many optimiser steps (``-1``: no limit; for smoke tests).
        progress: show Lightning's progress bar.

    Returns:
        The path of the written file.

    """
    if not datamodules:
        msg = "pretrain_head needs at least one datamodule with an annotated test split"
        raise InvalidArgumentError(msg)
    pl.seed_everything(seed, workers=True, verbose=False)
    start = time.perf_counter()
    model = FdslModel(**(model_kwargs or {}))
    model.features.load_weights()
    size = model.image_size
    all_images, all_masks, categories, names, banks = [], [], [], [], []
    for index, datamodule in enumerate(datamodules):
        images, masks, _ = collect_annotated_split(datamodule, size)
        refs = reference_images(datamodule, reference_k, seed, size)
        with torch.no_grad():
            level_tokens = [t.reshape(-1, t.shape[-1]) for t in _batched_tokens(model, refs)]
        banks.append(level_tokens)
        all_images.append(images)
        all_masks.append(masks)
        categories += [index] * len(images)
        names.append(f"{type(datamodule).__name__}:{getattr(datamodule, 'category', '?')}")
        logger.info("FDSL head data: %s, %d annotated images, %d reference images", names[-1], len(images), len(refs))
    dataset = AnnotatedSplit(torch.cat(all_images), torch.cat(all_masks), categories, augment=augment, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) > batch_size)
    module = HeadTrainer(model, banks, lr=lr, betas=betas)
    trainer = pl.Trainer(
        max_epochs=epochs,
        max_steps=max_steps,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=loader)
    if trainer.global_step == 0:
        msg = "FDSL head training made no optimiser step; nothing was written"
        raise RuntimeError(msg)
    metadata = {
        "trained_on": names,
        "annotated_images": len(dataset),
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "batch_size": batch_size,
        "lr": lr,
        "reference_k": reference_k,
        "augment": augment,
        "seed": seed,
        "model_kwargs": {
            k: v for k, v in (model_kwargs or {}).items() if isinstance(v, (int, float, str, bool, list, tuple))
        },
        "fit_seconds": round(time.perf_counter() - start, 1),
    }
    path = save_head_weights(model, output, metadata)
    logger.info("FDSL head written to %s (%d steps, %.0f s)", path, trainer.global_step, metadata["fit_seconds"])
    return path


def _batched_tokens(model: FdslModel, images: torch.Tensor, chunk: int = 4) -> list[torch.Tensor]:
    parts = [model.level_tokens(images[i : i + chunk]) for i in range(0, len(images), chunk)]
    return [torch.cat([p[level] for p in parts]) for level in range(model.num_levels)]
