"""Seeded k-shot selection of normal training images, shared by every model.

Algorithm (identical for every model, every datamodule and every rank): sort the paths of the normal
training images, take ``torch.randperm(n, generator=torch.Generator().manual_seed(few_shot_seed))[:k_shot]``
and sort those indices. ``k_shot=None`` keeps every normal image. An explicit ``few_shot_source`` (a folder
of images or a list of image paths) replaces the datamodule's normal images as the pool to select from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from anomalib_fewshot.components.io.atomic import atomic_write_json
from anomalib_fewshot.components.io.images import scan_images
from anomalib_fewshot.errors import AnomalibFewshotError

if TYPE_CHECKING:
    from lightning.pytorch import Trainer

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SHOT_FILE_NAME = "few_shot_selection.json"


class FewShotError(AnomalibFewshotError, ValueError):
    """A k-shot request that cannot be satisfied (bad ``k_shot``, empty or missing shot source)."""


def validate_k_shot(k_shot: int | None) -> int | None:
    """Check the ``k_shot`` argument at construction time."""
    if k_shot is None:
        return None
    if isinstance(k_shot, bool) or not isinstance(k_shot, int) or k_shot < 1:
        msg = (
            f"k_shot must be a positive integer or None (all normal images), got {k_shot!r}; these models train "
            "on at least one normal image (k_shot=1 is the smallest few-shot setting)"
        )
        raise FewShotError(msg)
    return k_shot


def select_shot_indices(n_images: int, k_shot: int | None, seed: int) -> list[int]:
    """Indices (into the *sorted* list of ``n_images`` normal paths) of the seeded k-shot selection."""
    if n_images == 0:
        msg = "there are no normal training images to select shots from: check the normal image folder / root"
        raise FewShotError(msg)
    if k_shot is None:
        return list(range(n_images))
    if k_shot > n_images:
        msg = (
            f"k_shot={k_shot} is larger than the number of normal training images ({n_images}): lower k_shot to "
            f"at most {n_images}, add normal images, or pass k_shot=None to use all of them"
        )
        raise FewShotError(msg)
    generator = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n_images, generator=generator)[:k_shot].tolist())


def select_shots(paths: Sequence[str | Path], k_shot: int | None, seed: int) -> list[str]:
    """The seeded selection applied to ``paths`` (sorted first, so input order never matters)."""
    ordered = sorted(str(p) for p in paths)
    return [ordered[i] for i in select_shot_indices(len(ordered), k_shot, seed)]


def subsample_to_shots(dataset: Any, k_shot: int | None, seed: int) -> tuple[Any, list[str], int]:
    """Subsample an anomalib dataset to the seeded shots among its normal images.

    Returns ``(subset, shot paths, number of normal images)``; the one place that turns the selection rule into
    a training set, for our models and for the baselines the benchmark compares them with.
    """
    samples = dataset.samples
    normal = samples[samples["label_index"] == 0] if "label_index" in samples.columns else samples
    shots = select_shots(normal["image_path"].astype(str).tolist(), k_shot, seed)
    chosen = set(shots)
    positions = [i for i, p in enumerate(samples["image_path"].astype(str)) if p in chosen]
    return dataset.subsample(positions), shots, len(normal)


def list_images(source: str | Path | Sequence[str | Path], argument: str = "few_shot_source") -> list[str]:
    """Image paths of a folder (recursive) or an explicit list; clear errors (naming ``argument``) for missing files."""
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.exists():
            msg = f"{argument} '{folder}' does not exist"
            raise FewShotError(msg)
        if folder.is_file():
            return [str(folder)]
        paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            msg = f"{argument} '{folder}' holds no images ({', '.join(IMAGE_EXTENSIONS)})"
            raise FewShotError(msg)
        return paths
    paths = [str(p) for p in source]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        msg = f"{argument} lists missing file(s): {missing}"
        raise FewShotError(msg)
    if not paths:
        msg = f"{argument} is an empty list"
        raise FewShotError(msg)
    return paths


def check_shots_readable(shots: Sequence[str | Path]) -> None:
    """Open every chosen shot before training; raise one :class:`FewShotError` that lists every unreadable file."""
    problems = scan_images(shots)
    if problems:
        listing = "\n  ".join(problems)
        msg = (
            f"{len(problems)} of the {len(shots)} selected shot image(s) cannot be read; replace or remove them "
            f"(or pick other shots with few_shot_seed / few_shot_source), nothing was trained:\n  {listing}"
        )
        raise FewShotError(msg)


def _package_version() -> str:
    from anomalib_fewshot._version import __version__

    return __version__


class FewShotMixin:
    """Mixin for :class:`~anomalib.models.components.AnomalibModule` subclasses: k-shot training sets.

    The model must set ``self.k_shot``, ``self.few_shot_seed`` and ``self.few_shot_source`` in its
    constructor and call :meth:`apply_few_shot` from ``setup("fit")``, which returns the shot paths; the
    datamodule is left as it is (the model trains on its own pool of those shots). The selection is written to
    ``<run dir>/few_shot_selection.json``, logged, and stored in the checkpoint (``checkpoint["few_shot"]``).
    """

    k_shot: int | None
    few_shot_seed: int
    few_shot_source: str | list[str] | None
    few_shot_record: dict[str, Any] | None = None

    def apply_few_shot(self, trainer: Trainer) -> list[str]:
        """Select the seeded shots of ``trainer.datamodule``'s normal training images (or ``few_shot_source``).

        Returns the shot paths in training order (the datamodule's sample order; the record lists them sorted).
        """
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "train_data"):
            msg = (
                f"{type(self).__name__} selects its k shots from an anomalib datamodule: call "
                "engine.fit(model, datamodule=...) (or anomalib train --data ...) instead of passing dataloaders."
            )
            raise FewShotError(msg)
        dataset = datamodule.train_data
        samples = dataset.samples
        normal = samples[samples["label_index"] == 0] if "label_index" in samples.columns else samples
        if self.few_shot_source is not None:
            pool = list_images(self.few_shot_source)
            shots = select_shots(pool, self.k_shot, self.few_shot_seed)
            ordered = shots
            source = "few_shot_source"
            n_pool = len(pool)
        else:
            if normal.empty:
                msg = (
                    f"the datamodule '{type(datamodule).__name__}' has no normal training images: check its root "
                    "and normal folder (e.g. Folder(normal_dir=...)), or pass few_shot_source"
                )
                raise FewShotError(msg)
            subset, shots, n_pool = subsample_to_shots(dataset, self.k_shot, self.few_shot_seed)
            ordered = subset.samples["image_path"].astype(str).tolist()
            source = "datamodule"
        check_shots_readable(shots)
        self.few_shot_record = {
            "k_shot": self.k_shot,
            "few_shot_seed": self.few_shot_seed,
            "source": source,
            "n_normal_images": n_pool,
            "shots": shots,
            "anomalib_fewshot_version": _package_version(),
        }
        logger.info(
            "%s: %d-shot selection (seed %d) from %d normal images: %s",
            type(self).__name__,
            len(shots),
            self.few_shot_seed,
            n_pool,
            shots,
        )
        if trainer.is_global_zero:
            root = Path(trainer.default_root_dir)
            atomic_write_json(root / SHOT_FILE_NAME, self.few_shot_record)
        return ordered

    def save_few_shot_record(self, checkpoint: dict[str, Any]) -> None:
        """Store the shot list in a checkpoint (plain types only, ``weights_only`` safe)."""
        if self.few_shot_record is not None:
            checkpoint["few_shot"] = self.few_shot_record

    def load_few_shot_record(self, checkpoint: dict[str, Any]) -> None:
        """Restore the shot list from a checkpoint."""
        self.few_shot_record = checkpoint.get("few_shot", self.few_shot_record)
