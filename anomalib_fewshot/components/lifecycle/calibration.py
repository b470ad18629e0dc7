"""The OK/NG decision from good images alone: thresholds and normalisation fitted without validation images.

Anomalib fits a model's thresholds and min-max normalisation on its validation pass, which anomalib takes from the
*test split* by default (``MVTecAD``: ``SAME_AS_TEST``; ``Folder``: half of it): a few-shot user has no such
labelled defects. Here the post-processor is calibrated from what the user does have, the shots (or good images the
user passes):

1. **Normal views**: :func:`~anomalib_fewshot.components.anomalies.normal_views` of every shot, seeded, at a
   :data:`VIEW_STRENGTHS` entry: ``strong`` (default: shifts up to ``±6 %`` of the side, rotations up to ``±10°``,
   brightness and contrast ``±20 %``) or ``mild`` (a few pixels, ``±10 %``: the views INT8 calibration draws). The
   shots themselves are left out: a shot is its own nearest neighbour and scores lower than any new good part. Good
   images the user passes (``calibration_source``) are used as they are, plus their views.
2. **Synthetic defects**: other views of the same images, each with one Perlin-shaped anomaly of anomalib's
   ``PerlinAnomalyGenerator`` (its own noise as texture). They are not the development split's defect families
   (:mod:`anomalib_fewshot.data.defects`), so the development split still grades the calibration.
3. The model scores both sets (raw image scores and maps) and a **rule** sets the thresholds:

   - ``"f1"``: the image threshold maximises F1 between normal views and synthetic defects, the pixel threshold
     F1 between their pixels and the defect masks (the threshold sits midway between the two scores where F1
     peaks);
   - ``"fpr"``: the image threshold lets a fraction ``target_fpr`` of the normal views' image scores pass above it,
     the pixel threshold the same fraction of their map maxima (a normal view shows no pixel over it at that rate).

   The min-max normalisation spans every calibration score (image) and map value (pixel), as anomalib's spans its
   validation outputs.

The result lives in the post-processor's buffers, so checkpoints, the exported graph and every inferencer carry it.
:class:`ShotPostProcessor` is anomalib's post-processor with the validation-pass fitting switched off: a model's
decision no longer depends on which images a datamodule validates on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from anomalib.post_processing import PostProcessor

from anomalib_fewshot.components.anomalies import normal_views
from anomalib_fewshot.components.nn.scoring import ImageScore
from anomalib_fewshot.errors import InvalidArgumentError

#: The threshold rules (see the module docstring).
RULES: tuple[str, ...] = ("f1", "fpr")
#: The rule a model uses unless told (``calibration_rule``).
DEFAULT_RULE = "f1"
#: Normal views (and as many synthetic defects) scored per calibration, spread over the images.
DEFAULT_VIEWS = 32
#: The ``fpr`` rule's default false-alarm rate on the normal views.
DEFAULT_TARGET_FPR = 0.05


@dataclass(frozen=True)
class ViewStrength:
    """How far a normal view departs from its image: translation (fraction of the side), jitter, rotation (deg)."""

    shift: float
    jitter: float
    rotation: float = 0.0


#: Normal-view strengths: ``mild`` is INT8 calibration's (a few pixels, ``±10 %`` light); ``strong`` adds pose and
#: lighting variation a shot does not show (``±6 %`` shift, ``±10°``, ``±20 %`` light).
VIEW_STRENGTHS: dict[str, ViewStrength] = {
    "mild": ViewStrength(shift=0.02, jitter=0.1),
    "strong": ViewStrength(shift=0.06, jitter=0.2, rotation=10.0),
}
#: The default (``calibration_views``): chosen on the development splits, ``research.decisions``
#: (docs/benchmarks/dev_decision/rules/summary.md): mild views score far below new good parts (a shot is nearly its
#: own nearest neighbour), so their thresholds rejected most good development images.
DEFAULT_STRENGTH = "strong"
#: Images scored per forward pass.
CHUNK = 8
#: Seed offset of the normal views an :class:`ImageScore` fits its statistics on (never the calibration sets').
STATISTICS_SEED_OFFSET = 1000

#: ``(images (B, 3, S, S) in [0, 1]) -> (raw image scores (B,), raw maps (B, H, W))``.
ScoreFunction = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class ShotPostProcessor(PostProcessor):
    """Anomalib's post-processor whose thresholds and normalisation are set by :func:`calibrate` only.

    Anomalib's own fits them on the validation pass; this one ignores validation batches, so a fit gives the same
    decision whatever (and whether) the datamodule validates. Same buffers as anomalib's: checkpoints of either load
    into the other, and the exported graph carries the calibrated values.
    """

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        """Ignored: the thresholds come from :func:`calibrate`."""
        del args, kwargs

    def on_validation_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        """Ignored: the thresholds come from :func:`calibrate`."""
        del args, kwargs


@dataclass(frozen=True)
class Calibration:
    """What a calibration set (raw-score domain) and how it got there."""

    rule: str
    image_threshold: float
    pixel_threshold: float
    image_min: float
    image_max: float
    pixel_min: float
    pixel_max: float
    normal_scores: torch.Tensor
    defect_scores: torch.Tensor
    target_fpr: float | None = None

    @property
    def normal_alarm_rate(self) -> float:
        """Share of the normal views the image threshold rejects (``score > threshold``)."""
        return float((self.normal_scores > self.image_threshold).float().mean())

    @property
    def defect_catch_rate(self) -> float:
        """Share of the synthetic defects the image threshold catches."""
        return float((self.defect_scores > self.image_threshold).float().mean())

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"rule {self.rule}: image threshold {self.image_threshold:.4g} rejects {self.normal_alarm_rate:.0%} of "
            f"{len(self.normal_scores)} normal views and catches {self.defect_catch_rate:.0%} of "
            f"{len(self.defect_scores)} synthetic defects; pixel threshold {self.pixel_threshold:.4g}"
        )


def calibration_sets(
    images: torch.Tensor,
    views: int = DEFAULT_VIEWS,
    seed: int = 0,
    include_images: bool = False,
    strength: str = DEFAULT_STRENGTH,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(normal, defective, masks)``: seeded normal views of ``images`` and as many views with a Perlin defect.

    Args:
        images: ``(N, 3, S, S)`` good images in ``[0, 1]`` (the shots, or good images a user passes).
        views: normal views in all (and as many defective ones), spread evenly over the images.
        seed: seed of the views and the defects (the same arguments give the same sets).
        include_images: also count ``images`` themselves as normal (good images that are not shots).
        strength: the normal views' :data:`VIEW_STRENGTHS` entry.

    """
    from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

    if strength not in VIEW_STRENGTHS:
        msg = f"view strength must be one of {sorted(VIEW_STRENGTHS)}, got {strength!r}"
        raise InvalidArgumentError(msg)
    view = VIEW_STRENGTHS[strength]

    if images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        msg = f"calibration needs good images as a (N, 3, S, S) tensor, got shape {tuple(images.shape)}"
        raise InvalidArgumentError(msg)
    if views < 1:
        msg = f"calibration views must be >= 1, got {views}"
        raise InvalidArgumentError(msg)
    images = images.float().clamp(0, 1)
    per_image = -(-views // len(images))
    shift = view.shift * float(images.shape[-1])
    drawn = normal_views(
        list(images), 2 * per_image, max_shift=shift, jitter=view.jitter, seed=seed, rotation=view.rotation
    )
    drawn = drawn.reshape(len(images), 2 * per_image, *images.shape[1:])
    normal = drawn[:, :per_image].reshape(-1, *images.shape[1:])[:views]
    bases = drawn[:, per_image:].reshape(-1, *images.shape[1:])[:views]
    if include_images:
        normal = torch.cat([images, normal])
    height, width = images.shape[-2:]
    defective, masks = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # built inside the seeded block: anomalib draws one augmentation's parameter at construction
        generator = PerlinAnomalyGenerator(probability=1.0, blend_factor=(0.2, 1.0))
        for base in bases:
            mask = torch.zeros(1, height, width)
            for _ in range(8):  # anomalib's Perlin mask can come out empty: draw again
                texture, mask = generator.generate_perturbation(height, width, base.device, None)
                if mask.sum() > 0:
                    break
            texture, mask = texture.permute(2, 0, 1).to(base.dtype), mask.permute(2, 0, 1).to(base.dtype)
            weight = float(torch.empty(1).uniform_(0.2, 1.0))
            defective.append((base * (1 - mask) + (weight * texture + (1 - weight) * base) * mask).clamp(0, 1))
            masks.append(mask[0] > 0.5)
    return normal, torch.stack(defective), torch.stack(masks)


def score_in_chunks(score: ScoreFunction, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw scores ``(B,)`` and maps ``(B, H, W)`` of ``images``, :data:`CHUNK` at a time, without gradients."""
    scores, maps = [], []
    with torch.no_grad():
        for start in range(0, len(images), CHUNK):
            chunk_scores, chunk_maps = score(images[start : start + CHUNK])
            scores.append(chunk_scores.detach().reshape(-1).float().cpu())
            chunk_maps = chunk_maps.detach().float().cpu()
            maps.append(chunk_maps.reshape(chunk_maps.shape[0], *chunk_maps.shape[-2:]))
    return torch.cat(scores), torch.cat(maps)


def _f1_threshold(preds: torch.Tensor, target: torch.Tensor) -> float:
    """The threshold of highest F1 for ``score > threshold``: the midpoint of the gap between two distinct scores.

    Among equal F1 the highest such threshold is taken. (Anomalib's ``F1AdaptiveThreshold`` returns a score itself,
    the lowest at the optimum, which its post-processor's strict ``>`` then does not flag.)
    """
    preds, target = preds.flatten().double(), target.flatten().bool()
    order = torch.argsort(preds, descending=True)
    ranked, positive = preds[order], target[order].double()
    true_pos = torch.cumsum(positive, 0)  # flagging the first i + 1 scores
    false_pos = torch.cumsum(1 - positive, 0)
    f1 = 2 * true_pos / (true_pos + false_pos + positive.sum()).clamp(min=1e-12)
    cut = torch.cat([ranked[:-1] > ranked[1:], torch.tensor([True])])  # a threshold fits only between distinct scores
    best = int(torch.argmax(torch.where(cut, f1, torch.full_like(f1, -1.0))))
    if best + 1 < len(ranked):
        return float((ranked[best] + ranked[best + 1]) / 2)
    low = float(ranked[-1])  # flag everything: just below the lowest score
    return low - max(abs(low), 1.0) * 1e-6


def _upper_quantile(values: torch.Tensor, rate: float) -> float:
    """The value that a share ``rate`` of ``values`` exceeds (linear interpolation; the maximum at rate 0)."""
    return float(torch.quantile(values.double(), 1.0 - rate))


@dataclass(frozen=True)
class CalibrationScores:
    """The raw outputs on the calibration sets: normal views and synthetic defects (with their masks)."""

    normal_scores: torch.Tensor
    normal_maps: torch.Tensor
    defect_scores: torch.Tensor
    defect_maps: torch.Tensor
    defect_masks: torch.Tensor


def score_calibration_sets(
    score: ScoreFunction,
    images: torch.Tensor,
    views: int = DEFAULT_VIEWS,
    seed: int = 0,
    include_images: bool = False,
    strength: str = DEFAULT_STRENGTH,
) -> CalibrationScores:
    """Draw the calibration sets of ``images`` (:func:`calibration_sets`) and score them with ``score``."""
    normal, defective, masks = calibration_sets(images, views, seed, include_images, strength)
    normal_scores, normal_maps = score_in_chunks(score, normal)
    defect_scores, defect_maps = score_in_chunks(score, defective)
    if defect_maps.shape[-2:] != masks.shape[-2:]:
        masks = torch.nn.functional.interpolate(masks[:, None].float(), size=defect_maps.shape[-2:])[:, 0] > 0.5
    return CalibrationScores(normal_scores, normal_maps, defect_scores, defect_maps, masks)


def fit_image_score(
    image_score: ImageScore, score: ScoreFunction, images: torch.Tensor, seed: int = 0, strength: str = DEFAULT_STRENGTH
) -> None:
    """Fit an :class:`ImageScore`'s normal-view statistics on views of ``images`` other than the calibration sets'.

    The views are drawn with ``seed +`` :data:`STATISTICS_SEED_OFFSET`, so the thresholds are never set on the views
    the statistics came from; their maps are computed with the model's own image score (:meth:`ImageScore.bypassed`).
    """
    if not image_score.needs_statistics:
        return
    normal, _, _ = calibration_sets(images, seed=seed + STATISTICS_SEED_OFFSET, strength=strength)
    with image_score.bypassed():
        _, maps = score_in_chunks(score, normal)
    image_score.fit(maps)


def fit_calibration(scores: CalibrationScores, rule: str = "f1", target_fpr: float = DEFAULT_TARGET_FPR) -> Calibration:
    """Thresholds and normalisation from scored calibration sets by ``rule`` (see the module docstring)."""
    if rule not in RULES:
        msg = f"calibration rule must be one of {RULES}, got {rule!r}"
        raise InvalidArgumentError(msg)
    if not 0.0 <= target_fpr < 1.0:
        msg = f"target_fpr must be in [0, 1), got {target_fpr}"
        raise InvalidArgumentError(msg)
    normal_scores, normal_maps = scores.normal_scores, scores.normal_maps
    defect_scores, defect_maps = scores.defect_scores, scores.defect_maps
    bad = sum(int((~torch.isfinite(v)).sum()) for v in (normal_scores, normal_maps, defect_scores, defect_maps))
    if bad:
        msg = f"calibration: {bad} non-finite raw scores or map values on the calibration views; cannot set thresholds"
        raise InvalidArgumentError(msg)
    if rule == "f1":
        labels = torch.cat([torch.zeros(len(normal_scores)), torch.ones(len(defect_scores))])
        image_threshold = _f1_threshold(torch.cat([normal_scores, defect_scores]), labels)
        pixel_masks = torch.cat([torch.zeros_like(normal_maps, dtype=torch.bool), scores.defect_masks.bool()])
        pixel_threshold = _f1_threshold(torch.cat([normal_maps, defect_maps]), pixel_masks)
    else:
        image_threshold = _upper_quantile(normal_scores, target_fpr)
        pixel_threshold = _upper_quantile(normal_maps.flatten(1).amax(dim=1), target_fpr)
    all_scores, all_maps = torch.cat([normal_scores, defect_scores]), torch.cat([normal_maps, defect_maps])
    return Calibration(
        rule=rule,
        image_threshold=image_threshold,
        pixel_threshold=pixel_threshold,
        image_min=float(all_scores.min()),
        image_max=float(all_scores.max()),
        pixel_min=float(all_maps.min()),
        pixel_max=float(all_maps.max()),
        normal_scores=normal_scores,
        defect_scores=defect_scores,
        target_fpr=target_fpr if rule == "fpr" else None,
    )


def apply_calibration(post_processor: PostProcessor, calibration: Calibration) -> None:
    """Write ``calibration`` into the post-processor's buffers (what checkpoints and exported graphs carry)."""
    buffers = {
        "_image_threshold": calibration.image_threshold,
        "_pixel_threshold": calibration.pixel_threshold,
        "image_min": calibration.image_min,
        "image_max": calibration.image_max,
        "pixel_min": calibration.pixel_min,
        "pixel_max": calibration.pixel_max,
    }
    for name, value in buffers.items():
        getattr(post_processor, name).fill_(value)


def calibrate(
    post_processor: PostProcessor,
    score: ScoreFunction,
    images: torch.Tensor,
    rule: str = "f1",
    target_fpr: float = DEFAULT_TARGET_FPR,
    views: int = DEFAULT_VIEWS,
    seed: int = 0,
    include_images: bool = False,
) -> Calibration:
    """Calibrate ``post_processor`` from good ``images`` alone (any anomalib model's: ``score`` runs it raw).

    Args:
        post_processor: anomalib's post-processor (its buffers are overwritten).
        score: the model's raw scoring of ``(B, 3, S, S)`` images in ``[0, 1]`` (pre-processing included).
        images: ``(N, 3, S, S)`` good images in ``[0, 1]`` in the model's geometry: the shots, or user images.
        rule: ``"f1"`` or ``"fpr"`` (the module docstring).
        target_fpr: the ``fpr`` rule's false-alarm rate on the normal views.
        views: normal views (and synthetic defects) to score.
        seed: seed of the views and defects.
        include_images: ``images`` are good images that are not shots: score them as normal too.

    Returns:
        The :class:`Calibration` written.

    """
    if not isinstance(post_processor, PostProcessor):
        msg = f"calibration writes anomalib's PostProcessor buffers; the model has a {type(post_processor).__name__}"
        raise InvalidArgumentError(msg)
    scored = score_calibration_sets(score, images, views, seed, include_images)
    calibration = fit_calibration(scored, rule, target_fpr)
    apply_calibration(post_processor, calibration)
    return calibration
