"""Training on a fixed, pre-built pool of samples (augmented shots with cached backbone features).

Methods such as DFD pre-compute ``samples_per_shot`` augmented versions of every shot once and then train for
many epochs on that pool. :class:`TrainingPoolMixin` lets such a model own its batch size, epochs and sampler
while still being driven by the user's datamodule and ``Engine``/``anomalib train``: during the fit, the
datamodule's ``train_dataloader`` is replaced by a loader over pool indices (a :class:`PoolBatch` per step), and
the original is restored when the fit ends. Lightning's distributed sampler injection still applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from anomalib_fewshot.errors import AnomalibFewshotError

if TYPE_CHECKING:
    from lightning.pytorch import Trainer


@dataclass
class PoolBatch:
    """A batch of pool indices. ``image``/``gt_mask`` stay ``None`` so anomalib's pre-processor passes it on."""

    indices: torch.Tensor
    image: torch.Tensor | None = None
    gt_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.indices)


class PoolIndexDataset(Dataset):
    """Dataset whose items are the indices ``0..size-1`` of a model-owned pool."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index

    @staticmethod
    def collate(items: list[int]) -> PoolBatch:
        """Collate indices into a :class:`PoolBatch`."""
        return PoolBatch(indices=torch.as_tensor(items, dtype=torch.long))


class ZeroStepsError(AnomalibFewshotError, RuntimeError):
    """A fit that finished without a single optimiser step."""


class TrainingPoolMixin:
    """Mixin for models that train on their own pool (see module docstring)."""

    _pool_datamodule = None

    def install_pool_loader(
        self,
        trainer: Trainer,
        pool_size: int,
        batch_size: int,
        seed: int = 0,
        replacement: bool = True,
    ) -> None:
        """Make ``trainer.datamodule.train_dataloader()`` iterate over ``pool_size`` pool indices.

        One epoch is ``pool_size`` draws: uniform *with replacement* (DFD's reference code) or a fresh shuffle of
        every index (``replacement=False``, the usual epoch).
        """
        if pool_size < 1:
            msg = "the training pool is empty"
            raise ZeroStepsError(msg)
        datamodule = trainer.datamodule
        generator = torch.Generator().manual_seed(int(seed))

        def train_dataloader() -> DataLoader:
            dataset = PoolIndexDataset(pool_size)
            sampler = RandomSampler(
                dataset, replacement=replacement, num_samples=pool_size if replacement else None, generator=generator
            )
            return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=PoolIndexDataset.collate)

        datamodule.train_dataloader = train_dataloader
        self._pool_datamodule = datamodule

    def release_pool_loader(self) -> None:
        """Restore the datamodule's own ``train_dataloader``."""
        datamodule = self._pool_datamodule
        if datamodule is not None and "train_dataloader" in vars(datamodule):
            del datamodule.train_dataloader
        self._pool_datamodule = None

    def check_optimizer_steps(self, trainer: Trainer) -> None:
        """Raise :class:`ZeroStepsError` if the fit has made no optimiser step."""
        if trainer.global_step == 0:
            msg = (
                f"{type(self).__name__} finished fitting without a single optimiser step (check "
                "limit_train_batches / max_steps): the model would be untrained."
            )
            raise ZeroStepsError(msg)
