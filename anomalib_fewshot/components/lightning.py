"""Lightning plumbing shared by the plugin's shot-trained models (DFD, PCSNet, ...).

Every model here normalises images inside its torch model (per backbone), trains on its own pool of k shots
(:class:`~anomalib_fewshot.components.pool.TrainingPoolMixin`), stores the shot list in checkpoints
(:class:`~anomalib_fewshot.components.fewshot.FewShotMixin`) and uses anomalib's default post-processor. This
mixin holds that common part once; the model classes stay direct ``AnomalibModule`` subclasses.
"""

from __future__ import annotations

from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torchvision.transforms.v2 import CenterCrop, Compose, Normalize, Resize

from anomalib_fewshot.components.fewshot import FewShotMixin
from anomalib_fewshot.components.pool import TrainingPoolMixin


def resize_pre_processor(image_size: int | tuple[int, int], resize_size: int | None = None) -> PreProcessor:
    """Anomalib pre-processor that only resizes (and optionally centre-crops); no normalisation.

    Args:
        image_size: model input size (an ``int`` for a square).
        resize_size: when given, resize to ``resize_size`` first and centre-crop ``image_size`` (the
            ``Resize(256) → CenterCrop(224)`` protocol of several papers); masks follow the same geometry.

    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if resize_size is None:
        return PreProcessor(transform=Compose([Resize(size, antialias=True)]))
    if resize_size < max(size):
        msg = f"resize_size ({resize_size}) must be >= image_size ({image_size}) to centre-crop"
        raise ValueError(msg)
    return PreProcessor(
        transform=Compose([Resize((resize_size, resize_size), antialias=True), CenterCrop(size)]),
    )


class ShotModelMixin(FewShotMixin, TrainingPoolMixin):
    """Common Lightning hooks of a model trained on k shots (mix in before ``AnomalibModule``).

    The model's ``hparams`` must hold ``image_size`` and ``epochs``. Provides the resize-only default
    pre-processor (``default_image_size``), the one-class learning type, the epoch-driven trainer arguments, the
    pre-processor check, loading the shot images with the model's own geometry, a validation step, shot-list
    checkpointing, a zero-step guard and anomalib's default post-processor.
    """

    #: Input size of the default pre-processor (the model's paper protocol); subclasses override.
    default_image_size: tuple[int, int] = (256, 256)

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize only: each torch model owns its backbone's input normalisation."""
        return resize_pre_processor(image_size or cls.default_image_size)

    @property
    def learning_type(self) -> LearningType:
        """The model trains on the normal training images (the k shots, or all): one-class."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """The model owns its schedule; validation (threshold fitting) runs once, after the last epoch."""
        epochs = int(self.hparams.epochs)
        return {
            "max_epochs": epochs,
            "check_val_every_n_epoch": epochs,
            "num_sanity_val_steps": 0,
            "gradient_clip_val": 0,
        }

    def check_pre_processor(self) -> None:
        """Reject a pre-processor that normalises, or one whose output size differs from ``image_size``."""
        transform = getattr(self.pre_processor, "transform", None)
        transforms = transform.transforms if isinstance(transform, Compose) else [transform]
        if any(isinstance(t, Normalize) for t in transforms):
            msg = (
                f"{type(self).__name__} normalises images inside the model (per backbone); its pre-processor must "
                "only resize. Remove Normalize from the custom pre_processor."
            )
            raise ValueError(msg)
        size = self.hparams.image_size
        if self.input_size is not None and tuple(self.input_size) != (size, size):
            msg = f"the pre-processor resizes to {tuple(self.input_size)} but the model was built for image_size={size}"
            raise ValueError(msg)

    def load_shot_images(self) -> list[torch.Tensor]:
        """The (already k-shot) training images as ``(3, S, S)`` floats in ``[0, 1]``, in the model's geometry.

        Uses the pre-processor's own transform (resize, optional crop), so training images see exactly what
        test images see.
        """
        dataset = self.trainer.datamodule.train_data
        transform = getattr(self.pre_processor, "transform", None)
        size = int(self.hparams.image_size)
        if transform is None:
            transform = Resize((size, size), antialias=True)
        images = []
        for index in range(len(dataset)):
            image = dataset[index].image.float()
            if image.max() > 1.0:
                image = image / 255.0
            images.append(transform(image).clamp(0, 1))
        return images

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Predict on a validation batch (anomalib's post-processor fits its thresholds on these)."""
        del args, kwargs
        predictions = self.model(batch.image)
        return batch.update(**predictions._asdict())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also store the shot list."""
        super().on_save_checkpoint(checkpoint)
        self.save_few_shot_record(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also restore the shot list."""
        super().on_load_checkpoint(checkpoint)
        self.load_few_shot_record(checkpoint)

    @property
    def fit_requires_steps(self) -> bool:
        """Whether a fit must make optimiser steps (False for a fit that only builds memory banks)."""
        return True

    def on_fit_end(self) -> None:
        """A fit without optimiser steps is an error, never a silent success."""
        super().on_fit_end()
        if self.fit_requires_steps:
            self.check_optimizer_steps(self.trainer)

    def configure_post_processor(self) -> PostProcessor:
        """Anomalib's default post-processor (thresholds and min–max from validation outputs)."""
        return PostProcessor()
