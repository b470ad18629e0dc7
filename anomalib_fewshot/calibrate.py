"""``anomalib-fewshot calibrate``: set a fitted checkpoint's OK/NG thresholds again, from good images alone.

A fit calibrates its post-processor from the shots it stores
(:mod:`~anomalib_fewshot.components.lifecycle.calibration`). This verb redoes that on an existing checkpoint with
another rule or false-alarm rate, or on good images the user has since collected (``--source``), without training:

    anomalib-fewshot calibrate --ckpt_path model.ckpt --rule fpr --target_fpr 0.01
    anomalib-fewshot calibrate --ckpt_path model.ckpt --source good_parts/ --output recalibrated.ckpt

It writes a new checkpoint (``<name>.calibrated.ckpt`` beside the old one unless ``--output`` says where; the old one
is never overwritten) whose post-processor carries the new thresholds and whose hyper-parameters record the rule;
``anomalib export`` of it ships them. Everything else in the checkpoint is kept as it was.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from anomalib_fewshot.components.io.atomic import atomic_write_bytes
from anomalib_fewshot.components.lifecycle.calibration import DEFAULT_TARGET_FPR, RULES, VIEW_STRENGTHS
from anomalib_fewshot.components.lifecycle.lightning import MODEL_CLASS_KEY
from anomalib_fewshot.errors import InvalidArgumentError

#: The post-processor buffers a calibration writes, as checkpoint state-dict keys.
BUFFER_KEYS = tuple(
    f"post_processor.{name}"
    for name in ("_image_threshold", "_pixel_threshold", "image_min", "image_max", "pixel_min", "pixel_max")
)


#: State-dict prefix of the torch model's image-score rule (``image_score``), whose statistics a calibration refits.
IMAGE_SCORE_PREFIX = "model.image_score."


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        msg = f"--ckpt_path '{path}' is not a file"
        raise InvalidArgumentError(msg)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        msg = f"--ckpt_path '{path}' is not a readable checkpoint ({type(exc).__name__}: {exc})"
        raise InvalidArgumentError(msg) from None


def recalibrate(
    ckpt_path: Path,
    output: Path | None = None,
    rule: str | None = None,
    target_fpr: float | None = None,
    source: str | None = None,
    views: str | None = None,
) -> dict[str, Any]:
    """Calibrate the model in ``ckpt_path`` again and write the result to ``output``; return a summary.

    Args:
        ckpt_path: a checkpoint of one of the plugin's models.
        output: where to write (default ``<ckpt_path stem>.calibrated.ckpt`` beside it); never ``ckpt_path``.
        rule: ``"f1"`` or ``"fpr"`` (default: the checkpoint's ``calibration_rule``).
        target_fpr: the ``fpr`` rule's false-alarm rate (default: the checkpoint's ``calibration_fpr``).
        source: a folder (or file) of good images that are not shots, used instead of the stored shots' views.
        views: the normal views' strength, ``"mild"`` or ``"strong"`` (default: the checkpoint's).

    """
    from anomalib_fewshot.models import REGISTRY

    ckpt_path = Path(ckpt_path)
    output = Path(output) if output is not None else ckpt_path.with_name(f"{ckpt_path.stem}.calibrated.ckpt")
    if output.resolve() == ckpt_path.resolve():
        msg = f"--output '{output}' is the checkpoint itself: write the recalibrated model to another file"
        raise InvalidArgumentError(msg)
    if rule is not None and rule not in RULES:
        msg = f"--rule must be one of {list(RULES)}, got {rule!r}"
        raise InvalidArgumentError(msg)
    checkpoint = _load(ckpt_path)
    writer = checkpoint.get(MODEL_CLASS_KEY)
    if writer not in REGISTRY:
        msg = (
            f"--ckpt_path '{ckpt_path}' was not written by an anomalib-fewshot model ({sorted(REGISTRY)}); "
            "anomalib's own models are calibrated by their validation pass"
        )
        raise InvalidArgumentError(msg)
    model = REGISTRY[writer].model_class.load_from_checkpoint(ckpt_path, map_location="cpu")
    images = None
    if source is not None:
        from anomalib_fewshot.components.lifecycle.fewshot import list_images

        images = torch.stack(model.read_shot_images(list_images(source, "--source")))
    elif model.calibration_shots is None:
        msg = (
            f"--ckpt_path '{ckpt_path}' stores no shots to calibrate from (written before anomalib-fewshot stored "
            "them): pass --source, a folder of good images of the part"
        )
        raise InvalidArgumentError(msg)
    calibration = model.calibrate(rule=rule, target_fpr=target_fpr, images=images, views=views)
    state = model.state_dict()
    # the thresholds, and the image score's normal-view statistics where its rule has them (refitted too)
    for key in [*BUFFER_KEYS, *(k for k in state if k.startswith(IMAGE_SCORE_PREFIX))]:
        checkpoint["state_dict"][key] = state[key].clone()
    hyper = checkpoint.setdefault("hyper_parameters", {})
    hyper["calibration_rule"] = calibration.rule
    if views is not None:
        hyper["calibration_views"] = views
    if calibration.target_fpr is not None:
        hyper["calibration_fpr"] = calibration.target_fpr
    import io

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(output, buffer.getvalue())
    return {
        "checkpoint": str(output),
        "model": writer,
        "calibrated_on": f"good images in {source}" if source is not None else "the stored shots' normal views",
        "rule": calibration.rule,
        "target_fpr": calibration.target_fpr,
        "image_threshold": calibration.image_threshold,
        "pixel_threshold": calibration.pixel_threshold,
        "normal_views_rejected": round(calibration.normal_alarm_rate, 4),
        "synthetic_defects_caught": round(calibration.defect_catch_rate, 4),
    }


def main(argv: list[str] | None = None) -> int:
    """``anomalib-fewshot calibrate --ckpt_path CKPT [--rule f1|fpr] [--target_fpr F] [--source DIR] [--output O]``."""
    from anomalib_fewshot.quiet import add_verbose_flag

    parser = argparse.ArgumentParser(prog="anomalib-fewshot calibrate", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ckpt_path", type=Path, required=True, help="checkpoint of a fitted plugin model")
    parser.add_argument("--rule", choices=RULES, default=None, help="threshold rule (default: the checkpoint's)")
    parser.add_argument(
        "--target_fpr", type=float, default=None,
        help=f"false-alarm rate of the fpr rule on the normal views (default: the checkpoint's, {DEFAULT_TARGET_FPR})",
    )  # fmt: skip
    parser.add_argument("--views", choices=sorted(VIEW_STRENGTHS), default=None, help="normal views' strength")
    parser.add_argument("--source", default=None, help="folder of good images (not shots) to calibrate on instead")
    parser.add_argument("--output", type=Path, default=None, help="new checkpoint (default: <name>.calibrated.ckpt)")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    summary = recalibrate(args.ckpt_path, args.output, args.rule, args.target_fpr, args.source, args.views)
    print(json.dumps(summary, indent=2))
    return 0
