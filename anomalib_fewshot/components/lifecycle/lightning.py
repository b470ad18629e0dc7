"""Lightning plumbing shared by the plugin's shot-trained models (DFD, PCSNet, ...).

Every model here normalises images inside its torch model (per backbone), trains on its own pool of k shots
(:class:`~anomalib_fewshot.components.lifecycle.pool.TrainingPoolMixin`), stores the shot list in checkpoints
(:class:`~anomalib_fewshot.components.lifecycle.fewshot.FewShotMixin`) and uses anomalib's default post-processor. This
mixin holds that common part once; the model classes stay direct ``AnomalibModule`` subclasses.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from anomalib import LearningType
from anomalib.data import Batch, InferenceBatch
from anomalib.metrics import Evaluator
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn
from torchvision.transforms.v2 import CenterCrop, Compose, Normalize, Resize

from anomalib_fewshot.components.io.images import read_image
from anomalib_fewshot.components.io.inputs import InputImageError, check_input_images
from anomalib_fewshot.components.lifecycle.arguments import check_arguments
from anomalib_fewshot.components.lifecycle.calibration import (
    DEFAULT_RULE,
    DEFAULT_STRENGTH,
    DEFAULT_TARGET_FPR,
    Calibration,
    ShotPostProcessor,
    apply_calibration,
    fit_calibration,
    fit_image_score,
    score_calibration_sets,
)
from anomalib_fewshot.components.lifecycle.fewshot import FewShotMixin, list_images, validate_k_shot
from anomalib_fewshot.components.lifecycle.pool import TrainingPoolMixin
from anomalib_fewshot.components.lifecycle.quantization import (
    CALIBRATION_KEY,
    DEFAULT_SCOPE,
    pack_shots,
    quantize_on_shots,
)
from anomalib_fewshot.components.nn.scoring import ImageScoreRule
from anomalib_fewshot.errors import AnomalibFewshotError, InvalidArgumentError

logger = logging.getLogger(__name__)


class CheckpointMismatchError(AnomalibFewshotError, ValueError):
    """A checkpoint written by another model class."""


#: Checkpoint key naming the plugin model class that wrote the checkpoint.
MODEL_CLASS_KEY = "anomalib_fewshot_model"


class InputCheck(Callback):
    """Check every validation/test/predict batch image with :func:`check_input_images` (names the files)."""

    @staticmethod
    def _check(batch: Any, stage: str) -> None:
        images = getattr(batch, "image", None)
        if images is None:  # a model-owned training pool batch
            return
        try:
            check_input_images(images, where=f"{stage} batch")
        except InputImageError as exc:
            paths = getattr(batch, "image_path", None)
            if paths:
                msg = f"{exc} (files: {list(paths)})"
                raise InputImageError(msg) from None
            raise

    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, *args: Any) -> None:
        """Check a validation batch."""
        del trainer, pl_module, args
        self._check(batch, "validation")

    def on_test_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, *args: Any) -> None:
        """Check a test batch."""
        del trainer, pl_module, args
        self._check(batch, "test")

    def on_predict_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, *args: Any) -> None:
        """Check a predict batch."""
        del trainer, pl_module, args
        self._check(batch, "predict")


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
        raise InvalidArgumentError(msg)
    return PreProcessor(
        transform=Compose([Resize((resize_size, resize_size), antialias=True), CenterCrop(size)]),
    )


@dataclass(frozen=True)
class FitPlan:
    """How a fit iterates over the pool a model built in :meth:`ShotModelMixin.prepare_fit`.

    One epoch is ``pool_size`` draws of pool indices in batches of ``batch_size``: uniform with replacement, or
    a fresh shuffle of every index (``replacement=False``).
    """

    pool_size: int
    batch_size: int
    replacement: bool = True

    @property
    def batches_per_epoch(self) -> int:
        """Training batches in one epoch over the pool."""
        return math.ceil(self.pool_size / self.batch_size)


class ShotModelMixin(FewShotMixin, TrainingPoolMixin):
    """The one fit lifecycle of a model trained on k shots (mix in before ``AnomalibModule``).

    Lifecycle: ``setup("fit")`` checks the pre-processor, selects the shots (:meth:`apply_few_shot`), loads the
    pretrained weights (:meth:`load_pretrained_weights`), reads the shot images in the model's geometry and hands
    them to the model's :meth:`prepare_fit`, which builds what training needs (pool, banks, prototypes) and
    returns a :class:`FitPlan`; the datamodule's training loader is replaced by one over that pool. At the end
    of training (the first validation or the end of the last epoch, whichever comes first; once per global step) a
    fit without optimiser steps is an error, :meth:`finish_fit` runs and the post-processor is calibrated from the
    shots (:meth:`calibrate`: thresholds and normalisation from good images alone, never from the validation
    images); ``teardown("fit")`` restores the loader and calls :meth:`release_fit`. :meth:`prepare_fit` needs no
    trainer, so a model can be prepared from in-memory images (the fast contract tests, the cost profiler).

    The model's ``hparams`` must hold ``image_size``, ``epochs``, ``k_shot``, ``few_shot_seed`` (``train_seed``) and
    ``few_shot_source``. Also provides the resize-only default pre-processor, the one-class learning type, the
    epoch-driven trainer arguments, a validation step, shot-list checkpointing and anomalib's default
    post-processor.
    """

    #: Input size of the default pre-processor (the model's paper protocol); subclasses override.
    default_image_size: tuple[int, int] = (256, 256)
    #: NNCF model type for INT8 quantisation (``"transformer"`` for the attention models).
    quantization_model_type: str | None = None
    #: What INT8 export quantises (:data:`~anomalib_fewshot.components.lifecycle.quantization.SCOPES`), chosen on the
    #: development split (the model README's Export section lists the measurement).
    quantization_scope: str = DEFAULT_SCOPE
    #: The shots as stored for INT8 calibration (set by a fit or a checkpoint).
    calibration_shots: torch.Tensor | None = None
    _fit_prepared: bool = False
    _finished_at_step: int = -1
    #: The datamodule's category during a fit (category tables of pseudo-anomaly generators), else ``None``.
    fit_category: str | None = None
    #: The last calibration of the post-processor (:meth:`calibrate`), with the seconds it took.
    last_calibration: Calibration | None = None
    calibration_seconds: float | None = None

    # ------------------------------------------------------------------ construction
    def init_shot_model(self, pre_processor: Any, positive: Sequence[str] = ()) -> None:
        """The constructor prologue (run by ``ShotModel.__init__``): defaults and checks from ``hparams``.

        Installs the resize-only pre-processor (``image_size``, optional ``resize_size`` crop) when
        ``pre_processor`` is ``True``, checks every ``Literal`` argument against its annotation and the
        ``positive`` integer arguments, and validates the k-shot arguments.
        """
        hp = self.hparams
        check_arguments(type(self).__init__, hp, positive)
        if pre_processor is True:
            self.pre_processor = resize_pre_processor(hp.image_size, hp.get("resize_size"))
        self.k_shot = validate_k_shot(hp.k_shot)
        self.few_shot_seed = hp.few_shot_seed
        # the fit's own randomness; checkpoints written before train_seed existed used the few-shot seed
        self.train_seed = int(hp.few_shot_seed if hp.get("train_seed") is None else hp.train_seed)
        self.few_shot_source = hp.few_shot_source
        fpr = hp.get("calibration_fpr", DEFAULT_TARGET_FPR)
        if not 0.0 <= fpr < 1.0:
            msg = f"calibration_fpr must be in [0, 1), got {fpr}"
            raise InvalidArgumentError(msg)

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize only: each torch model owns its backbone's input normalisation."""
        return resize_pre_processor(image_size or cls.default_image_size)

    # ------------------------------------------------------------------ the fit lifecycle
    def prepare_fit(self, images: list[torch.Tensor]) -> FitPlan:
        """Build what training needs from the shot images ``(3, S, S)`` in ``[0, 1]``; no trainer needed.

        The one model-specific step of the lifecycle (pool, banks, prototypes, references ...).
        """
        raise NotImplementedError

    def release_fit(self) -> None:
        """Free what :meth:`prepare_fit` built (after the fit)."""

    def finish_fit(self) -> None:
        """After training, before the calibration (e.g. score statistics fitted on the training pool or shots)."""

    def load_pretrained_weights(self) -> None:
        """Load the frozen extractor's pretrained weights (when fitting starts, never at construction)."""
        self.model.backbone.load_weights()

    def training_samples(self, images: list[torch.Tensor], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` samples of what a fit on ``images`` trains on, for a gallery (``research.gallery``).

        The default: the shots themselves with empty masks (a model that trains on normal images only). Models
        with pseudo-anomalies override it with their own generator, seeded like a fit, so the gallery shows the
        anomalies the model really learns from. Does not touch the fit state.

        Args:
            images: shot images ``(3, S, S)`` in ``[0, 1]`` (as :meth:`prepare_fit` receives them).
            count: how many samples.

        Returns:
            ``(count, 3, S, S)`` images in ``[0, 1]`` and ``(count, 1, S, S)`` masks (1 = pseudo-anomaly).

        """
        picks = [images[i % len(images)] for i in range(count)]
        stacked = torch.stack(picks)
        return stacked, torch.zeros_like(stacked[:, :1])

    @property
    def fit_epochs(self) -> int:
        """Epochs of the fit (``hparams.epochs``)."""
        return int(self.hparams.epochs)

    def epochs_for(self, plan: FitPlan) -> int:
        """Epochs of a fit over ``plan``'s pool: :attr:`fit_epochs`, or ``hparams.steps`` spread over the pool.

        A model with a ``steps`` argument (not ``None``) trains for that many optimiser steps whatever the number
        of shots: ``ceil(steps / batches per epoch)`` epochs, so the schedule does not grow with k.
        """
        steps = self.hparams.get("steps")
        if steps is None:
            return self.fit_epochs
        return max(1, math.ceil(int(steps) / plan.batches_per_epoch))

    def setup(self, stage: str | None = None) -> None:
        """On ``fit``: select the shots, load weights, :meth:`prepare_fit` and take over the training loader."""
        if stage != "fit" or self._fit_prepared:
            return
        self.check_pre_processor()
        shots = self.apply_few_shot(self.trainer)
        self.fit_category = getattr(self.trainer.datamodule, "category", None)
        self.load_pretrained_weights()
        images = self.read_shot_images(shots)
        self.calibration_shots = pack_shots(images)  # INT8 calibration from the checkpoint alone
        plan = self.prepare_fit(images)
        self.install_pool_loader(
            self.trainer, plan.pool_size, plan.batch_size, seed=self.train_seed, replacement=plan.replacement
        )
        if self.hparams.get("steps") is not None:  # a step budget: its epochs are known once the pool is
            epochs = self.epochs_for(plan)
            self.trainer.fit_loop.max_epochs = epochs
            self.trainer.check_val_every_n_epoch = epochs
        self._fit_prepared = True

    def teardown(self, stage: str | None = None) -> None:
        """After the fit: give the datamodule its own loader back and free the fit state."""
        if stage == "fit":
            self.release_pool_loader()
            self.release_fit()
            self._fit_prepared = False
            self.fit_category = None

    def on_validation_start(self) -> None:
        """During a fit: the end of training (:meth:`_end_training`) before the validation pass."""
        super().on_validation_start()
        self._end_training()

    def on_train_end(self) -> None:
        """The end of training when no validation pass ran (an empty or switched-off validation loader)."""
        super().on_train_end()
        self._end_training()

    def _end_training(self) -> None:
        """Refuse a fit without optimiser steps, then :meth:`finish_fit` and :meth:`calibrate` (once per step)."""
        trainer = self.trainer
        if trainer.state.fn != "fit" or not self._fit_prepared:
            return
        if self.fit_requires_steps:
            self.check_optimizer_steps(trainer)
        if self._finished_at_step != trainer.global_step:
            self.finish_fit()
            if isinstance(self.post_processor, ShotPostProcessor):
                self.calibrate()
            self._finished_at_step = trainer.global_step

    # ------------------------------------------------------------------ the OK/NG decision
    def calibration_images(self) -> tuple[torch.Tensor, bool]:
        """``(images, are_extra)``: good images ``calibration_source`` names, else the stored shots.

        ``are_extra`` says the images are good images that are not shots (scored as normal themselves too).
        """
        source = self.hparams.get("calibration_source")
        if source is not None:
            return torch.stack(self.read_shot_images(list_images(source, "calibration_source"))), True
        if self.calibration_shots is None:
            msg = (
                f"{type(self).__name__} has no stored shots to calibrate from (a checkpoint written before "
                "anomalib-fewshot stored them): pass calibration_source, a folder of good images"
            )
            raise InvalidArgumentError(msg)
        return self.calibration_shots.float() / 255, False

    def score_raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw image scores and maps of ``(B, 3, S, S)`` images in ``[0, 1]`` in the model's geometry (eval mode)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                output = self.model(images.to(self.device))
        finally:
            self.model.train(was_training)
        return output.pred_score, output.anomaly_map

    def calibrate(
        self,
        rule: str | None = None,
        target_fpr: float | None = None,
        images: torch.Tensor | None = None,
        views: str | None = None,
    ) -> Calibration:
        """Set the post-processor's thresholds and normalisation from good images alone.

        The views, synthetic defects and rules are those of
        :mod:`~anomalib_fewshot.components.lifecycle.calibration`; a fit runs this at the end of training with the
        model's ``calibration_rule`` and ``calibration_fpr``.

        Args:
            rule: ``"f1"`` or ``"fpr"`` (default: the model's ``calibration_rule``).
            target_fpr: the ``fpr`` rule's false-alarm rate (default: the model's ``calibration_fpr``).
            images: good images ``(N, 3, S, S)`` in ``[0, 1]`` that are not shots (default: ``calibration_source``,
                else the stored shots' views).
            views: the normal views' strength, ``"mild"`` or ``"strong"`` (default: the model's
                ``calibration_views``).

        """
        hp = self.hparams
        rule = rule or hp.get("calibration_rule", DEFAULT_RULE)
        target_fpr = hp.get("calibration_fpr", DEFAULT_TARGET_FPR) if target_fpr is None else target_fpr
        views = views or hp.get("calibration_views", DEFAULT_STRENGTH)
        extra = images is not None
        if images is None:
            images, extra = self.calibration_images()
        start = time.perf_counter()
        if hasattr(self.model, "image_score"):
            fit_image_score(self.model.image_score, self.score_raw, images, seed=self.train_seed, strength=views)
        scored = score_calibration_sets(
            self.score_raw, images, seed=self.train_seed, include_images=extra, strength=views
        )
        calibration = fit_calibration(scored, rule, target_fpr)
        apply_calibration(self.post_processor, calibration)
        self.last_calibration = calibration
        self.calibration_seconds = time.perf_counter() - start
        logger.info("%s calibrated in %.1f s: %s", type(self).__name__, self.calibration_seconds, calibration.summary())
        return calibration

    def require_fit_state(self, ready: bool) -> None:
        """Raise a clear error when a training step runs before :meth:`prepare_fit`."""
        if not ready:
            msg = f"{type(self).__name__}.training_step called before prepare_fit (setup('fit') did not run)"
            raise RuntimeError(msg)

    def log_losses(self, total: torch.Tensor, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        """Log the loss terms (per epoch) and the total (per step and epoch); a no-op outside a trainer."""
        if self._trainer is None:
            return
        for name, value in terms.items():
            self.log(name, value, on_step=False, on_epoch=True, batch_size=batch_size)
        self.log("train_loss", total, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)

    @property
    def learning_type(self) -> LearningType:
        """The model trains on the normal training images (the k shots, or all): one-class."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """The model owns its schedule; validation (threshold fitting) runs once, after the last epoch."""
        epochs = self.fit_epochs
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
            raise InvalidArgumentError(msg)
        size = self.hparams.image_size
        if self.input_size is not None and tuple(self.input_size) != (size, size):
            msg = f"the pre-processor resizes to {tuple(self.input_size)} but the model was built for image_size={size}"
            raise InvalidArgumentError(msg)

    def read_shot_images(self, paths: Sequence[str]) -> list[torch.Tensor]:
        """The shot images as ``(3, S, S)`` floats in ``[0, 1]``, in the model's geometry.

        Uses the pre-processor's own transform (resize, optional crop), so training images see exactly what
        test images see.
        """
        transform = getattr(self.pre_processor, "transform", None)
        size = int(self.hparams.image_size)
        if transform is None:
            transform = Resize((size, size), antialias=True)
        # read the files ourselves: 16-bit PNGs keep their range (anomalib's reader clips them to white)
        return [transform(read_image(path)).clamp(0, 1) for path in paths]

    def forward(self, batch: torch.Tensor, *args: Any, **kwargs: Any) -> InferenceBatch:
        """Anomalib's pipeline (pre-processor, model, post-processor) after an eager input check."""
        check_input_images(batch, where=f"{type(self).__name__} input")
        return super().forward(batch, *args, **kwargs)

    def configure_callbacks(self) -> Sequence[Callback] | Callback:
        """Anomalib's component callbacks plus :class:`InputCheck` (bad batches fail with the file names)."""
        callbacks = super().configure_callbacks()
        callbacks = [callbacks] if isinstance(callbacks, Callback) else list(callbacks)
        return [InputCheck(), *callbacks]

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Predict on a validation batch (anomalib's post-processor fits its thresholds on these)."""
        del args, kwargs
        predictions = self.model(batch.image)
        return batch.update(**predictions._asdict())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also store the shot list and the model class name."""
        super().on_save_checkpoint(checkpoint)
        self.save_few_shot_record(checkpoint)
        checkpoint[MODEL_CLASS_KEY] = type(self).__name__
        if self.calibration_shots is not None:
            checkpoint[CALIBRATION_KEY] = self.calibration_shots

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's loader; a checkpoint of another plugin model is a clear error, not a state-dict dump."""
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        except (RuntimeError, TypeError, KeyError, ValueError) as exc:
            try:
                writer = torch.load(checkpoint_path, map_location="cpu", weights_only=True).get(MODEL_CLASS_KEY)
            except Exception:
                writer = None
            if writer is not None and writer != cls.__name__:
                msg = (
                    f"checkpoint '{checkpoint_path}' holds a {writer} model, not {cls.__name__}: load it with "
                    f"{writer}.load_from_checkpoint(...)"
                )
                raise CheckpointMismatchError(msg) from exc
            raise

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also restore the shot list."""
        super().on_load_checkpoint(checkpoint)
        self.load_few_shot_record(checkpoint)
        self.calibration_shots = checkpoint.get(CALIBRATION_KEY, self.calibration_shots)

    def _post_training_quantization_ov(self, model: Any, datamodule: Any = None) -> Any:
        """Anomalib's ``INT8_PTQ`` step, calibrated on the stored shots (never on the datamodule's images).

        Anomalib's own step calibrates on the validation loader, the test split by default; ``datamodule`` is
        ignored here. See :mod:`anomalib_fewshot.components.lifecycle.quantization`.
        """
        del datamodule
        return quantize_on_shots(
            model, self.calibration_shots, self.quantization_model_type, scope=self.quantization_scope
        )

    def _accuracy_control_quantization_ov(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: anomalib's ``INT8_ACQ`` calibrates and validates on the datamodule's test images."""
        del args, kwargs
        msg = (
            "compression_type INT8_ACQ calibrates and validates on the datamodule's validation and test images, "
            "which a few-shot model must not use: export with INT8_PTQ (calibrated on the stored shots)"
        )
        raise InvalidArgumentError(msg)

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
        """Anomalib's post-processor, calibrated from good images (:meth:`calibrate`) instead of validation."""
        return ShotPostProcessor()


class ShotModel(ShotModelMixin):
    """The base of every plugin model, listed before ``AnomalibModule``: ``class Foo(ShotModel, AnomalibModule)``.

    Every model stays a *direct* subclass of ``AnomalibModule``, since anomalib's ``list_models`` and ``get_model``
    look only at its direct subclasses; this class is not one, so anomalib lists the models and never the base.

    It owns the arguments every model shares after its own and the constructor prologue: anomalib's pipeline
    components, the default resize-only pre-processor, the checks of every ``Literal`` argument of the subclass's
    constructor and of its :attr:`positive_arguments`, and the k-shot arguments. A model declares its own typed
    arguments and forwards the rest, ``def __init__(self, <own arguments>, **kwargs: Any)`` with
    ``super().__init__(**kwargs)`` as its first statement; anomalib's CLI (jsonargparse) and Lightning's
    ``hparams`` see this constructor's arguments as the model's own (``--model.evaluator false`` works as before).

    The subclass's constructor must take ``k_shot`` and ``image_size`` (their defaults are the method's own); the
    prologue reads every argument from ``hparams``.

    Args:
        pre_trained: load the backbone's pretrained weights when fitting starts, never at construction (timm's or
            open_clip's download unless the weights come with an installed package or ``weights_path``).
        weights_path: local backbone weights file for air-gapped installations: a state dict of the classifier or
            of the feature extractor (``.pth`` or ``.safetensors``; FDSL's CLIP also takes OpenAI's ``.pt`` file).
        few_shot_seed: seed of the shot selection (and of the fit's randomness unless ``train_seed`` is given).
        train_seed: seed of the fit's randomness: pool, augmentations, pseudo-anomalies, loader order and the
            calibration's views (``None``: ``few_shot_seed``, as before this argument existed). The same shots fitted
            with two training seeds measure how much a fit varies. Layer initialisation follows torch's global seed:
            the benchmark runner seeds it with the training seed; under anomalib's CLI use ``--seed_everything``.
        few_shot_source: folder or list of images to take the shots from instead of the datamodule.
        calibration_rule: how the OK/NG thresholds are set from the shots' normal views and synthetic defects at
            the end of training: ``"f1"`` (the F1 optimum between them) or ``"fpr"`` (the normal views' score that
            ``calibration_fpr`` of them exceed). Never from validation images.
        calibration_fpr: the ``"fpr"`` rule's false-alarm rate on the normal views, in ``[0, 1)``.
        calibration_views: how far the normal views depart from the shots: ``"strong"`` (``±6 %`` shift, ``±10°``,
            ``±20 %`` light: the variation new good parts show that a shot does not) or ``"mild"`` (a few pixels,
            ``±10 %`` light: INT8 calibration's views).
        calibration_source: folder or list of good images (not shots) to calibrate on instead of the shots' views.
        image_score: the image score the model ships (:class:`~anomalib_fewshot.components.nn.scoring.ImageScore`):
            ``"model"`` (the method's own), or from the map: ``"max"``, ``"top1"`` (mean of its highest 1 %),
            ``"resid"`` (less the shots' normal views' mean map) or ``"z"`` (standardised per pixel by them); the
            last two fit their statistics at the end of training, from normal views of the shots.
        pre_processor: anomalib's pre-processor; ``True``: resize (and centre-crop where the model has a
            ``resize_size``) only, since every model normalises its backbone's input internally.
        post_processor: anomalib's post-processor (``True``: its default).
        evaluator: anomalib's evaluator (``True``: its default metrics).
        visualizer: anomalib's visualizer (``True``: its default).

    """

    #: Integer constructor arguments that must be positive (checked at construction).
    positive_arguments: tuple[str, ...] = ()

    def __init__(
        self,
        pre_trained: bool = True,
        weights_path: str | None = None,
        few_shot_seed: int = 0,
        train_seed: int | None = None,
        few_shot_source: str | list[str] | None = None,
        calibration_rule: Literal["f1", "fpr"] = DEFAULT_RULE,
        calibration_fpr: float = DEFAULT_TARGET_FPR,
        calibration_views: Literal["mild", "strong"] = DEFAULT_STRENGTH,
        calibration_source: str | list[str] | None = None,
        image_score: ImageScoreRule = "model",
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        super().__init__(  # AnomalibModule's, next in the model's MRO
            pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator, visualizer=visualizer
        )
        # read from hparams, as the subclass's are
        del pre_trained, weights_path, few_shot_seed, train_seed, few_shot_source
        del calibration_rule, calibration_fpr, calibration_views, calibration_source, image_score
        self.init_shot_model(pre_processor, positive=self.positive_arguments)
