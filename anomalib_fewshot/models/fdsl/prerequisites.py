"""FDSL stage 1 as a prerequisite: train the class-agnostic head once, on another dataset's annotated test split.

:data:`HEAD_PRETRAINING` is the :class:`~anomalib_fewshot.components.lifecycle.spec.Prerequisite` in FDSL's spec: the
``anomalib-fewshot fdsl-pretrain`` verb (:func:`main`, the sub-command itself) and :func:`head_command`, the command
line a benchmark grid's ``heads:`` entry turns into. The produced file is passed as ``Fdsl(head_weights=FILE)``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from anomalib_fewshot.components.lifecycle.spec import Prerequisite
from anomalib_fewshot.errors import MissingFileError
from anomalib_fewshot.quiet import add_verbose_flag

VERB = "fdsl-pretrain"

#: The :class:`~anomalib_fewshot.models.fdsl.torch_model.FdslModel` arguments of an ``Fdsl`` config that the head
#: depends on (the head file must be loaded by a model with the same values).
MODEL_KEYS = (
    "backbone",
    "layers",
    "pre_trained",
    "weights_path",
    "vision_cfg",
    "image_size",
    "head_dims",
    "first_batch_norm",
    "nam",
    "align",
    "absolute",
    "match_chunk",
    "quick_gelu",
)


def model_kwargs(config: str | Path | None) -> dict[str, Any]:
    """The :class:`FdslModel` arguments of an ``Fdsl`` model config (``model.init_args``), LFE off."""
    if config is None:
        return {"lfe": False}
    import yaml

    path = Path(config)
    if not path.is_file():
        msg = f"model config '{path}' not found"
        raise MissingFileError(msg)
    data = yaml.safe_load(path.read_text()) or {}
    init_args = (data.get("model") or {}).get("init_args") or data.get("init_args") or {}
    kwargs = {k: v for k, v in init_args.items() if k in MODEL_KEYS}
    kwargs["lfe"] = False  # the head trains on the global branch; windows only matter at inference
    return kwargs


def head_command(settings: Mapping[str, Any], output: Path) -> list[str]:
    """``anomalib-fewshot`` arguments that train the head described by a grid's ``heads:`` entry into ``output``.

    Args:
        settings: the ``heads:`` entry merged with its dataset: ``profile``, ``root``, ``category``, optionally
            ``datamodule`` (MVTecAD), ``epochs`` (5), ``batch_size`` (8), ``reference_k`` (10), ``augment``
            (mosaic) and ``seed`` (111).
        output: the head-weights file to write.

    """
    from anomalib_fewshot.config import model_config_path

    return [
        VERB,
        "--config", str(model_config_path(settings["profile"])),
        "--data", str(settings.get("datamodule", "MVTecAD")),
        "--data-root", str(Path(settings["root"]).resolve()),
        "--categories", str(settings["category"]),
        "--output", str(output),
        "--epochs", str(settings.get("epochs", 5)),
        "--batch-size", str(settings.get("batch_size", 8)),
        "--reference-k", str(settings.get("reference_k", 10)),
        "--augment", str(settings.get("augment", "mosaic")),
        "--seed", str(settings.get("seed", 111)),
    ]  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"anomalib-fewshot {VERB}",
        description=(
            "FDSL stage 1: train the class-agnostic head on the annotated TEST split (images with masks) of an "
            "anomalib datamodule, one or several categories, and write a head-weights file for "
            "`anomalib train --model Fdsl --model.head_weights FILE`. Never evaluate the head on the data it saw."
        ),
    )
    parser.add_argument("--config", type=Path, default=None, help="model config (configs/model/fdsl*.yaml)")
    parser.add_argument("--data", default="MVTecAD", help="anomalib datamodule class (MVTecAD, Visa, Folder, ...)")
    parser.add_argument("--data-root", default=None, help="dataset root (the datamodule's root argument)")
    parser.add_argument("--categories", nargs="*", default=None, help="categories (one datamodule each)")
    parser.add_argument("--data-args", default="{}", help="more datamodule arguments as JSON")
    parser.add_argument("--output", type=Path, required=True, help="head-weights file to write")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--reference-k", type=int, default=10, help="normal train images per category bank")
    parser.add_argument("--augment", default="mosaic", choices=["none", "mosaic", "crop", "mosaic_crop"])
    parser.add_argument("--seed", type=int, default=111)
    parser.add_argument("--max-steps", type=int, default=-1)
    add_verbose_flag(parser)
    return parser


def pretrain_from_args(args: argparse.Namespace) -> Path:
    """Build the datamodules named on the ``fdsl-pretrain`` command line and train the head; return its file."""
    import anomalib.data

    from anomalib_fewshot.models.fdsl.head import pretrain_head

    datamodule_class = getattr(anomalib.data, args.data, None)
    if datamodule_class is None:
        msg = f"--data {args.data!r} is not an anomalib datamodule (e.g. MVTecAD, Visa, Folder)"
        raise SystemExit(msg)
    try:
        extra = json.loads(args.data_args)
    except json.JSONDecodeError as exc:
        msg = f"--data-args is not valid JSON: {exc}"
        raise SystemExit(msg) from exc
    if args.data_root is not None:
        extra["root"] = args.data_root
    extra.setdefault("num_workers", 0)
    datamodules = (
        [datamodule_class(**extra, category=c) for c in args.categories]
        if args.categories
        else [datamodule_class(**extra)]
    )
    return pretrain_head(
        datamodules,
        output=args.output,
        model_kwargs=model_kwargs(args.config),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        reference_k=args.reference_k,
        augment=args.augment,
        seed=args.seed,
        max_steps=args.max_steps,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``anomalib-fewshot fdsl-pretrain ARGS``: train the head and print where its file is."""
    args = _parser().parse_args(None if argv is None else list(argv))
    path = pretrain_from_args(args)
    print(f"FDSL head weights written to {path}")
    return 0


HEAD_PRETRAINING = Prerequisite(
    name="head",
    verb=VERB,
    argument="head_weights",
    summary="FDSL stage 1, train the head on an annotated test split",
    command=head_command,
    main=main,
)
