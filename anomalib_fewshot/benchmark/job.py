"""One benchmark job (model × dataset × k × seed), run in its own process by :mod:`.runner`.

``python -m anomalib_fewshot.benchmark.job '<json spec>' RESULT.json`` fits the model on the seeded shots,
evaluates raw scores on the whole test split and times eager torch and OpenVINO (f32) inference.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalib_fewshot.benchmark.datasets import build_datamodule, has_masks
from anomalib_fewshot.benchmark.machine import cpu_name
from anomalib_fewshot.benchmark.store import train_seed
from anomalib_fewshot.components.io.atomic import atomic_write_json
from anomalib_fewshot.errors import InvalidArgumentError

#: Baselines from anomalib that run offline on the lite backbone (registry weights loaded by us).
LITE_BACKBONE = {"backbone": "tf_efficientnet_lite0", "layers": ["blocks.2", "blocks.4"]}


#: The evaluation batch of every benchmark tool (runner, re-timing, branch diagnosis, learning curves, fusion screen).
EVAL_BATCH_SIZE = 8

#: anomalib's own models used as baselines, with the arguments that put them on the lite backbone.
BASELINES: dict[str, dict[str, Any]] = {
    "Patchcore": {"coreset_sampling_ratio": 1.0},
    "Padim": {"n_features": 100},  # PaDiM's ResNet-18 setting (100 random channels)
}


def evaluation_datamodule(
    model: Any,
    root: str | Path | None = None,
    category: str | None = None,
    datamodule: str = "MVTecAD",
    batch_size: int = EVAL_BATCH_SIZE,
    spec: dict[str, Any] | None = None,
) -> Any:
    """A set-up datamodule that reads images for ``model`` as anomalib's Engine does: its resize applied per image.

    Inside ``Engine.fit``/``test`` anomalib appends the model's ``Resize`` to every subset's augmentations, so each
    image is resized before the batch is collated. A datamodule built outside the Engine (the offline diagnosis
    tools) would instead collate differently sized images (magnetic tile) by resizing them to the batch's largest
    image first, and its scores would depend on the batch (0.862-0.870 image AUROC for one checkpoint at batches of
    8-32, against 0.865 read this way, which is what the runner's rows measure). ``spec``: a parsed dataset entry
    (:mod:`.datasets`, e.g. a ``Folder``) instead of ``root``, ``category`` and ``datamodule``.
    """
    from anomalib.data.transforms.utils import extract_transforms_by_type
    from torchvision.transforms.v2 import Resize

    resizes = extract_transforms_by_type(model.pre_processor.transform, Resize)
    module = build_datamodule(
        spec or {"root": root, "category": category, "datamodule": datamodule},
        num_workers=0,
        eval_batch_size=batch_size,
        augmentations=resizes[0] if resizes else None,
    )
    module.setup()
    return module


def build_baseline(name: str, image_size: int = 256, **overrides: Any) -> Any:
    """An anomalib baseline on the lite backbone with the offline registry weights (mean = std = 0.5 inputs)."""
    import anomalib.models as anomalib_models
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    from anomalib_fewshot.components.nn.backbones import Backbone

    if name not in BASELINES:
        msg = f"unknown baseline '{name}'; available: {sorted(BASELINES)} and the plugin models"
        raise InvalidArgumentError(msg)
    pre = PreProcessor(Compose([Resize((image_size, image_size), antialias=True), Normalize([0.5] * 3, [0.5] * 3)]))
    model = getattr(anomalib_models, name)(
        **LITE_BACKBONE, pre_trained=False, pre_processor=pre, **{**BASELINES[name], **overrides}
    )
    weights = Backbone(LITE_BACKBONE["backbone"], LITE_BACKBONE["layers"], pre_trained=True)
    weights.load_weights()
    model.model.feature_extractor.feature_extractor.load_state_dict(weights.network.state_dict())
    return model


def build_model(spec: dict[str, Any]) -> Any:
    """Our models from a shipped profile; anomalib's baselines on the same lite backbone and weights."""
    name = spec["model"]
    if name in BASELINES:
        return build_baseline(name, spec.get("image_size", 256), **spec.get("overrides", {}))
    import anomalib_fewshot.models as plugin_models
    from anomalib_fewshot.config import model_init_args

    overrides = {"k_shot": spec["k_shot"], "few_shot_seed": spec["seed"], **spec.get("overrides", {})}
    fit_seed = train_seed(spec)
    if fit_seed != spec["seed"]:  # the default (None) is the few-shot seed: today's rows' models unchanged
        overrides["train_seed"] = int(fit_seed)
    return getattr(plugin_models, name)(**model_init_args(spec["profile"], **overrides))


def _subsample_for_baseline(datamodule: Any, k_shot: int | None, seed: int) -> list[str]:
    """Apply our shot selection to a datamodule for an anomalib model that has no k-shot argument."""
    from lightning.pytorch.trainer.states import TrainerFn

    from anomalib_fewshot.components.lifecycle.fewshot import subsample_to_shots

    datamodule.setup(TrainerFn.FITTING)  # marks the datamodule as set up, so the Engine keeps our subset
    datamodule.train_data, shots, _ = subsample_to_shots(datamodule.train_data, k_shot, seed)
    return shots


def raw_predictions(model: Any, dataloader: Any, graph: Any = None) -> tuple[np.ndarray, ...]:
    """Raw (un-post-processed) scores and maps on ``dataloader``, with labels and masks at model resolution.

    The caller puts the model in eval mode. ``graph``, when given, replaces the eager model: a callable taking the
    batch's images (before the pre-processor, which an exported graph contains) and returning raw ``(scores, maps)``
    (e.g. :class:`~anomalib_fewshot.benchmark.int8.CompiledGraph`).
    """
    scores, maps, labels, masks = [], [], [], []
    transform = model.pre_processor.transform
    with torch.no_grad():
        for batch in dataloader:
            image, mask = transform(batch.image, batch.gt_mask)
            if graph is None:
                out = model.model(image)
                score, amap = out.pred_score, out.anomaly_map
            else:
                score, amap = graph(batch.image)
            scores.append(score.reshape(-1).float())
            amap = amap.float()
            amap = amap.reshape(amap.shape[0], *amap.shape[-2:])
            maps.append(amap)
            labels.append(batch.gt_label.reshape(-1).int())
            if mask is None:
                mask = torch.zeros_like(amap, dtype=torch.bool)
            masks.append(mask.reshape(amap.shape).bool())
    return (torch.cat(scores).numpy(), torch.cat(maps).numpy(), torch.cat(labels).numpy(), torch.cat(masks).numpy())


def _monotone01(values: np.ndarray) -> torch.Tensor:
    """Strictly monotone, unclamped affine map of raw scores into [0, 1] (keeps every ordering and tie)."""
    lo, hi = float(values.min()), float(values.max())
    return torch.from_numpy((values - lo) / (hi - lo if hi > lo else 1.0)).float()


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of raw image ``scores`` of any scale, mapped into ``[0, 1]`` by :func:`_monotone01` first.

    torchmetrics would squash scores outside ``[0, 1]`` by a sigmoid, tying large raw scores (PCSNet's) at 1.
    """
    from torchmetrics.classification import BinaryAUROC

    return float(BinaryAUROC()(_monotone01(scores), torch.from_numpy(labels).int()))


def compute_metrics(
    scores: np.ndarray, maps: np.ndarray, labels: np.ndarray, masks: np.ndarray, pixel: bool = True
) -> dict[str, float | None]:
    """Image AUROC, pixel AUROC, AUPRO (FPR ≤ 0.3), image and pixel F1-max on raw scores.

    ``pixel=False`` (test images without masks): the pixel metrics are ``None``, never computed against empty masks.
    """
    from anomalib.metrics.aupro import _AUPRO
    from torchmetrics.classification import BinaryAUROC, BinaryPrecisionRecallCurve

    def f1max(preds: torch.Tensor, target: torch.Tensor) -> float:
        precision, recall, _ = BinaryPrecisionRecallCurve(thresholds=None)(preds, target)
        f1 = 2 * precision * recall / (precision + recall + 1e-12)
        return float(f1.max())

    image_scores, image_target = _monotone01(scores), torch.from_numpy(labels).int()
    metrics: dict[str, float | None] = {
        "image_auroc": image_auroc(scores, labels),
        "image_f1max": f1max(image_scores, image_target),
    }
    if not pixel:
        return {**metrics, "pixel_auroc": None, "pixel_f1max": None, "aupro": None}
    pixel_scores, pixel_target = _monotone01(maps), torch.from_numpy(masks).int()
    metrics |= {
        "pixel_auroc": float(BinaryAUROC()(pixel_scores.flatten(), pixel_target.flatten())),
        "pixel_f1max": f1max(pixel_scores.flatten(), pixel_target.flatten()),
    }
    aupro = _AUPRO(fpr_limit=0.3)
    aupro.update(pixel_scores, pixel_target)
    metrics["aupro"] = float(aupro.compute())
    return metrics


def family_metrics(
    scores: np.ndarray, maps: np.ndarray, labels: np.ndarray, masks: np.ndarray, families: list[str]
) -> dict[str, float]:
    """Image AUROC, pixel AUROC and AUPRO per defect family: that family's images against every good image.

    ``families`` names each image's folder (``good`` or the family), in the order of the other arrays; the columns
    are ``<metric>@<family>``.
    """
    names = np.asarray(families)
    out = {}
    for family in sorted(set(families) - {"good"}):
        keep = (names == "good") | (names == family)
        metrics = compute_metrics(scores[keep], maps[keep], labels[keep], masks[keep])
        out.update(
            {f"{metric}@{family}": round(metrics[metric], 4) for metric in ("image_auroc", "pixel_auroc", "aupro")}
        )
    return out


#: The job folder's sub-folder of the deployable INT8 export (``deploy_int8`` in the spec; ``fit-parts``).
DEPLOY_INT8_DIR = "export_int8_ptq"


def decision_metrics(
    post_processor: Any, scores: np.ndarray, maps: np.ndarray, labels: np.ndarray, masks: np.ndarray
) -> dict[str, float]:
    """The OK/NG decision at the thresholds ``post_processor`` carries, applied to raw outputs as a deployment does.

    ``image_fpr``: share of good images rejected; ``image_tpr``: share of defective images caught; ``image_f1`` (to
    compare with the oracle ``image_f1max``); ``pixel_f1`` of the predicted masks; ``score_clamped``: share of images
    whose normalised score is clamped at 0 or 1. Empty when the post-processor has no image threshold.
    """
    from anomalib.data import InferenceBatch

    if torch.isnan(post_processor.image_threshold).item():
        return {}
    with torch.no_grad():
        out = post_processor(
            InferenceBatch(
                pred_score=torch.from_numpy(scores).float(),
                anomaly_map=torch.from_numpy(maps).float(),
                pred_label=None,
                pred_mask=None,
            )
        )
    predicted = out.pred_label.reshape(-1).bool().numpy()
    truth = labels.astype(bool)

    def f1(pred: np.ndarray, target: np.ndarray) -> float:
        tp = float((pred & target).sum())
        wrong = float((pred ^ target).sum())
        return 2 * tp / (2 * tp + wrong) if tp + wrong else 1.0

    normalised = out.pred_score.reshape(-1).numpy()
    result = {
        # images whose normalised score is clamped at 0 or 1 (beyond the calibration's range: no ranking left)
        "score_clamped": float(((normalised <= 0) | (normalised >= 1)).mean()),
        "image_fpr": float(predicted[~truth].mean()) if (~truth).any() else float("nan"),
        "image_tpr": float(predicted[truth].mean()) if truth.any() else float("nan"),
        "image_f1": f1(predicted, truth),
    }
    if out.pred_mask is not None and masks.any():
        result["pixel_f1"] = f1(out.pred_mask.reshape(masks.shape).bool().numpy(), masks.astype(bool))
    # the raw image score at which the shipped model says NG (6 significant digits: raw scores have any scale)
    threshold = float(f"{float(post_processor.image_threshold):.6g}")
    return {**{name: round(value, 4) for name, value in result.items()}, "image_threshold": threshold}


def baseline_shots(model: Any, datamodule: Any) -> list[torch.Tensor]:
    """An anomalib baseline's shots (the datamodule's subsampled training images) resized to its geometry."""
    from anomalib.data.transforms.utils import extract_transforms_by_type
    from torchvision.transforms.v2 import Resize

    resize = extract_transforms_by_type(model.pre_processor.transform, Resize)[0]
    return [resize(datamodule.train_data[i].image) for i in range(len(datamodule.train_data))]


def calibration_source(model: Any, datamodule: Any) -> tuple[Any, Any]:
    """``(score, images)`` to calibrate ``model`` the plugin's way: its raw scoring and its good shot images.

    Plugin models score with :meth:`score_raw` on their stored shots; anomalib's baselines run their pre-processor
    and torch model on the job's shots (the datamodule's subsampled training images) in the model's geometry.
    """
    if hasattr(model, "calibration_images"):
        return model.score_raw, model.calibration_images()[0]
    transform = model.pre_processor.transform
    images = torch.stack(baseline_shots(model, datamodule))

    def score(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model.model(transform(batch))
        return out.pred_score, out.anomaly_map

    return score, images.clamp(0, 1)


def _write_decision_scores(score: Any, images: Any, spec: dict[str, Any], outputs: tuple[np.ndarray, ...]) -> None:
    """Write ``decision_scores.json`` (raw image scores) to the job's folder for rules compared offline.

    It holds the evaluated split's raw image scores and labels and the calibration sets' image scores at every view
    strength (``research.decisions`` compares threshold rules on them).
    """
    from anomalib_fewshot.components.lifecycle.calibration import VIEW_STRENGTHS, score_calibration_sets

    scores, _, labels, _ = outputs
    record: dict[str, Any] = {"scores": scores.round(6).tolist(), "labels": labels.tolist(), "views": {}}
    for strength in VIEW_STRENGTHS:
        scored = score_calibration_sets(score, images, seed=int(train_seed(spec)), strength=strength)
        record["views"][strength] = {
            "normal": scored.normal_scores.numpy().round(6).tolist(),
            "defect": scored.defect_scores.numpy().round(6).tolist(),
        }
    atomic_write_json(Path(spec["work_dir"]) / "decision_scores.json", record)


def decision_columns(
    model: Any, datamodule: Any, spec: dict[str, Any], outputs: tuple[np.ndarray, ...]
) -> dict[str, Any]:
    """The decision columns of a fitted ``model`` (eval mode) on its evaluated split's raw ``outputs``.

    A plugin model's post-processor was calibrated by its fit; a baseline's is calibrated here the same way (same
    views, defects, rule and seed), replacing the thresholds anomalib's validation pass fitted. Every rule in the
    spec's ``calibration_rules`` adds the columns it would give, suffixed ``[rule]`` (one scoring of the views).
    """
    import copy

    from anomalib_fewshot.components.lifecycle.calibration import (
        DEFAULT_RULE,
        DEFAULT_STRENGTH,
        DEFAULT_TARGET_FPR,
        apply_calibration,
        fit_calibration,
        score_calibration_sets,
    )

    score, images = calibration_source(model, datamodule)
    hparams = getattr(model, "hparams", {})
    shipped_rule = hparams.get("calibration_rule", DEFAULT_RULE)
    target_fpr = hparams.get("calibration_fpr", DEFAULT_TARGET_FPR)
    strength = hparams.get("calibration_views", DEFAULT_STRENGTH)
    rules = [rule for rule in spec.get("calibration_rules") or [] if rule != shipped_rule]
    is_plugin = hasattr(model, "calibration_images")
    columns: dict[str, Any] = {}
    if spec.get("calibration_rules"):  # a research grid: keep the image scores for rules chosen offline
        _write_decision_scores(score, images, spec, outputs)
    if rules or not is_plugin:
        scored = score_calibration_sets(score, images, seed=int(train_seed(spec)), strength=strength)
        if not is_plugin:
            apply_calibration(model.post_processor, fit_calibration(scored, shipped_rule, target_fpr))
        for rule in rules:
            post = copy.deepcopy(model.post_processor)
            apply_calibration(post, fit_calibration(scored, rule, target_fpr))
            columns.update({f"{k}[{rule}]": v for k, v in decision_metrics(post, *outputs).items()})
    columns.update(decision_metrics(model.post_processor, *outputs))
    columns["calibration"] = f"{shipped_rule}@{strength}"  # the shipped rule and view strength
    return columns


def labelled_columns(model: Any, labelled: dict[str, Any]) -> dict[str, Any]:
    """The fitted ``model`` (eval mode, thresholds set) on a part's labelled images: ``test_*`` columns.

    ``labelled`` is a parsed ``Folder`` entry (``fit-parts``' ``test:``); its whole test folder is scored: the
    raw-output metrics (image-level only without masks), the decision at the shipped threshold and ``test_n``.
    """
    outputs, metrics = scored_outputs(model, evaluation_datamodule(model, spec=labelled), pixel=has_masks(labelled))
    metrics.update(decision_metrics(model.post_processor, *outputs))
    metrics.pop("image_threshold", None)  # the catalogue names it once
    return {**{f"test_{name}": value for name, value in metrics.items()}, "test_n": len(outputs[2])}


def scored_outputs(model: Any, datamodule: Any, pixel: bool) -> tuple[tuple[np.ndarray, ...], dict[str, Any]]:
    """The fitted ``model``'s raw outputs on ``datamodule``'s test folder and their raw-output metrics.

    Non-finite outputs are refused (:func:`check_finite`); ``pixel=False`` leaves the pixel columns ``None``.
    """
    outputs = raw_predictions(model, datamodule.test_dataloader())
    check_finite(outputs[0], outputs[1])
    return outputs, compute_metrics(*outputs, pixel=pixel)


def check_finite(scores: np.ndarray, maps: np.ndarray) -> None:
    """Refuse to score NaN/inf outputs (e.g. Padim at k = 1, whose covariance divides by N − 1 = 0)."""
    bad_scores, bad_maps = int((~np.isfinite(scores)).sum()), int((~np.isfinite(maps)).sum())
    if bad_scores or bad_maps:
        msg = (
            f"non-finite model outputs: {bad_scores} of {scores.size} image scores and {bad_maps} of {maps.size} "
            "map values are NaN/inf"
        )
        raise InvalidArgumentError(msg)


def split_metrics(
    model: Any, datamodule: Any, per_family: bool, spec: dict[str, Any] | None = None
) -> tuple[dict[str, Any], int]:
    """The runner's scoring of a fitted ``model`` (eval mode) on ``datamodule``'s test folder.

    Returns the raw-output metrics (with each defect family's columns when ``per_family``: a development split's
    families or an MVTec-layout test folder's defect types, each against the good images), the decision columns at
    the shipped thresholds when ``spec`` is given (:func:`decision_columns`), and the number of test images. A
    ``spec`` whose dataset has no masks (:func:`.datasets.has_masks`) gets image-level metrics only (the pixel
    columns ``None``).
    """
    outputs, metrics = scored_outputs(model, datamodule, pixel=spec is None or has_masks(spec))
    scores, maps, labels, masks = outputs
    if spec is not None:
        metrics.update(decision_columns(model, datamodule, spec, outputs))
    if per_family:
        families = datamodule.test_data.samples["label"].astype(str).tolist()
        metrics.update(family_metrics(scores, maps, labels, masks, families))
    return metrics, len(labels)


def _time_ms(fn: Any, inputs: list[Any], warmup: int = 3) -> float:
    for item in inputs[:warmup]:
        fn(item)
    times = []
    for item in inputs:
        start = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _inference_speed(
    model: Any, engine: Any, datamodule: Any, work: Path, count: int, openvino: bool = True
) -> dict[str, Any]:
    """Median ms per image of the eager model and of its OpenVINO export (f32) on the first ``count`` test images.

    ``openvino=False`` times the eager model only (an INT8 grid times its OpenVINO graphs itself, interleaved).
    """
    from anomalib.deploy import ExportType, OpenVINOInferencer

    items = [datamodule.test_data[i] for i in range(min(count, len(datamodule.test_data)))]
    images = [item.image[None].float() for item in items]
    model.eval()
    with torch.no_grad():
        torch_ms = _time_ms(model, images)
    if not openvino:
        return {"torch_ms": round(torch_ms, 1)}
    xml = engine.export(model, ExportType.OPENVINO, export_root=work / "export", onnx_kwargs={"opset_version": 18})
    inferencer = OpenVINOInferencer(xml, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
    batch_dim = inferencer.model.inputs[0].get_partial_shape()[0]
    # anomalib's own Patchcore exports with the batch fixed to the tracing example's (2): time such models at
    # that batch and report per image.
    ov_batch = batch_dim.get_length() if batch_dim.is_static else 1
    arrays = [np.repeat(image.numpy(), ov_batch, axis=0) for image in images]
    openvino_ms = _time_ms(inferencer.predict, arrays) / ov_batch
    return {"torch_ms": round(torch_ms, 1), "openvino_ms": round(openvino_ms, 1), "openvino_batch": ov_batch}


def _int8_columns(
    model: Any,
    engine: Any,
    datamodule: Any,
    work: Path,
    timing_images: int,
    scopes: list[str] | None,
    pixel: bool = True,
) -> dict[str, Any]:
    """The INT8 grid's columns (:mod:`anomalib_fewshot.benchmark.int8`) on this job's test split."""
    from anomalib_fewshot.benchmark.int8 import int8_columns

    def evaluate(graph: Any) -> dict[str, float]:
        scores, maps, labels, masks = raw_predictions(model, datamodule.test_dataloader(), graph)
        check_finite(scores, maps)
        return compute_metrics(scores, maps, labels, masks, pixel)

    shots = None
    if not hasattr(model, "calibration_shots"):  # anomalib's baselines: the job's shots, in the model's geometry
        shots = baseline_shots(model, datamodule)
    return int8_columns(model, engine, datamodule, work, evaluate, shots, timing_images, scopes)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one job; return its result row."""
    from anomalib.engine import Engine
    from lightning.pytorch import Callback

    torch.manual_seed(int(train_seed(spec)))  # layer initialisation (and Padim's channel draw) follow the fit's seed
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    work = Path(spec["work_dir"])
    datamodule = build_datamodule(spec, num_workers=0, eval_batch_size=EVAL_BATCH_SIZE, train_batch_size=8)
    model = build_model(spec)
    shots = None
    if spec["model"] in BASELINES:
        shots = _subsample_for_baseline(datamodule, spec["k_shot"], spec["seed"])

    class _FitTimer(Callback):
        start = end = None

        def setup(self, trainer, pl_module, stage):
            if stage == "fit" and self.start is None:
                self.start = time.perf_counter()

        def on_validation_start(self, trainer, pl_module):
            if self.end is None:
                self.end = time.perf_counter()

    timer = _FitTimer()
    # The metrics come from the raw outputs below, never from anomalib's validation pass, and the thresholds from
    # the shots (our models calibrate at the end of training and ignore validation; the baselines are calibrated
    # the same way after the fit): one validation batch keeps anomalib's on_validation_start hooks (Patchcore and
    # Padim build their memory there) and saves a whole pass over the test split.
    engine = Engine(
        default_root_dir=work, logger=False, callbacks=[timer], enable_progress_bar=False, limit_val_batches=1
    )
    start = time.perf_counter()
    engine.fit(model, datamodule=datamodule)
    fit_total = time.perf_counter() - start
    if shots is None:
        shots = (model.few_shot_record or {}).get("shots")
    model.eval()
    # one column set per defect type (a development split's families, an MVTec-layout test folder's defect types)
    per_type = spec.get("datamodule", "MVTecAD") == "MVTecAD"
    row, n_test = split_metrics(model, datamodule, per_family=per_type, spec=spec)

    if spec.get("labelled"):  # fit-parts: the part's labelled images, beside its development split
        row.update(labelled_columns(model, spec["labelled"]))

    timing_images = spec.get("timing_images", 30)
    if spec.get("speed", True):
        row.update(_inference_speed(model, engine, datamodule, work, timing_images, openvino=not spec.get("int8")))
    if spec.get("int8"):
        scopes = spec["int8"] if isinstance(spec["int8"], list) else None
        row.update(_int8_columns(model, engine, datamodule, work, timing_images, scopes, has_masks(spec)))
    if spec.get("deploy_int8"):  # fit-parts: a deployable INT8 model (post-processor included), our models only
        from anomalib.deploy import CompressionType, ExportType

        engine.export(
            model,
            ExportType.OPENVINO,
            export_root=work / DEPLOY_INT8_DIR,
            compression_type=CompressionType.INT8_PTQ,
            onnx_kwargs={"opset_version": 18},
        )
    row.update(
        {
            "fit_s": round((timer.end or time.perf_counter()) - (timer.start or start), 1),
            "fit_total_s": round(fit_total, 1),  # engine.fit, including its one validation batch
            # the end-of-training calibration (scoring 64 views of the shots), not in fit_s
            "calibration_s": round(getattr(model, "calibration_seconds", None) or 0.0, 1) or None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
            "n_test": n_test,
            # 1-minute load average when the job ends: above the core count, other work shared the CPU and the
            # timings of this row are pessimistic.
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "shots": json.dumps(shots),
            # timings from different machines are not comparable: name the machine and the time of each row
            "machine": cpu_name(),
            "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        }
    )
    return row


def main() -> None:
    """Entry point: ``python -m anomalib_fewshot.benchmark.job SPEC_JSON RESULT_JSON``."""
    from anomalib_fewshot.benchmark.lifeline import die_with_parent

    die_with_parent()
    spec = json.loads(sys.argv[1])
    atomic_write_json(sys.argv[2], run(spec))


if __name__ == "__main__":
    main()
