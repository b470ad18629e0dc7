"""The benchmark grid: a grid YAML expanded into job specs, its skip rules, expected failures, heads and selections.

A job spec is a dict with the job key fields (model, variant, dataset, k_shot, seed), the profile and overrides
of the model entry, the dataset's root/category/datamodule (``folder``: an anomalib ``Folder``'s folders,
:mod:`.datasets`), and the job's time limit and torch threads. The YAML
format is described in :mod:`anomalib_fewshot.benchmark.runner`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anomalib_fewshot.benchmark.store import DEFAULT_SPLIT, job_key, name_parts
from anomalib_fewshot.errors import InvalidArgumentError, MissingFileError

FULL = "full"
#: What a grid's ``evaluate_on`` may name: the dataset's test split, or its development split (synthetic defects on
#: normal training images that are never shots, :mod:`anomalib_fewshot.data.dev_split`).
SPLITS = ("test", "dev")


def read_config(path: Path, kind: str, section: str, hint: str = "") -> dict[str, Any]:
    """The YAML mapping in ``path`` that has a ``section`` key, or an error naming the file (``kind``: what it is).

    Raises:
        MissingFileError: No such file.
        InvalidArgumentError: Not YAML, not a mapping, or no ``section``.

    """
    import yaml

    if not path.is_file():
        msg = f"{kind} '{path}' not found{hint}"
        raise MissingFileError(msg)
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        msg = f"{path}: not a {kind} (YAML with a '{section}:' section): {exc}"
        raise InvalidArgumentError(msg) from exc
    if not isinstance(config, dict) or section not in config:
        msg = f"{path}: not a {kind} (YAML with a '{section}:' section)"
        raise InvalidArgumentError(msg)
    return config


def load_grid(config_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read a benchmark YAML and expand it into job specs."""
    config = read_config(config_path, "benchmark config", "grid", " (see configs/benchmark/ for examples)")
    grid = config["grid"]
    split = str(config.get("evaluate_on", DEFAULT_SPLIT))
    if split not in SPLITS:
        msg = f"{config_path}: evaluate_on must be one of {SPLITS}, got {split!r}"
        raise InvalidArgumentError(msg)
    grid["datasets"] = _datasets(config_path, grid.get("datasets"))
    jobs = []
    train_seeds = grid.get("train_seeds") or [None]
    if not isinstance(train_seeds, list) or not all(
        seed is None or (type(seed) is int and seed >= 0)  # a YAML true is a bool, an int subclass: not a seed
        for seed in train_seeds
    ):
        msg = f"{config_path}: train_seeds must be a list of non-negative integers, got {train_seeds!r}"
        raise InvalidArgumentError(msg)
    for model, dataset, k_shot, seed, fit_seed in itertools.product(
        grid["models"], grid["datasets"], grid["k_shot"], grid["seeds"], train_seeds
    ):
        if str(k_shot) != FULL and (not isinstance(k_shot, int) or k_shot < 1):
            msg = f"{config_path}: k_shot values must be positive integers or '{FULL}', got {k_shot!r}"
            raise InvalidArgumentError(msg)
        if split == "dev" and str(k_shot) == FULL:
            msg = (
                f"{config_path}: k_shot '{FULL}' fits on every normal training image, the development images "
                "included: a development grid takes k_shot values up to 8"
            )
            raise InvalidArgumentError(msg)
        overrides = model.get("overrides", {})
        variant = model.get("variant") or model.get("profile", "") + (
            "+" + json.dumps(overrides, sort_keys=True, separators=(",", ":")) if overrides else ""
        )
        jobs.append(
            {
                "head": model.get("head"),
                "model": model["model"],
                "variant": variant,
                "profile": model.get("profile", ""),
                "overrides": overrides,
                "dataset": dataset["name"],
                "root": dataset["root"],
                "category": dataset["category"],
                "datamodule": dataset.get("datamodule", "MVTecAD"),
                "folder": dataset["folder"],  # an anomalib Folder's folders, else None
                "k_shot": str(k_shot) if str(k_shot) == FULL else k_shot,
                "seed": seed,
                "train_seed": seed if fit_seed is None else fit_seed,  # the fit's randomness (default: the shots')
                "split": split,
                "timeout_s": model.get("timeout_s", config.get("timeout_s", 3600)),
                "threads": model.get("threads"),
                "memory_gb": model.get("memory_gb"),  # Ray executor: memory per job (GiB)
                "gpus": model.get("gpus"),  # Ray executor: GPUs per job
                "speed": bool(config.get("speed", True)),
                "int8": _int8_setting(config_path, config.get("int8", False)),
                "calibration_rules": _calibration_rules(config_path, config.get("calibration_rules")),
            }
        )
    return config, jobs


def _datasets(config_path: Path, entries: Any) -> list[dict[str, Any]]:
    """The grid's datasets parsed (:func:`.datasets.parse_dataset`: absolute paths, Folder entries checked)."""
    from anomalib_fewshot.benchmark.datasets import parse_dataset

    if not isinstance(entries, list) or not entries:
        msg = f"{config_path}: grid.datasets must be a non-empty list"
        raise InvalidArgumentError(msg)
    parsed = [parse_dataset(entry, f"{config_path}: dataset {i + 1}") for i, entry in enumerate(entries)]
    names = [dataset["name"] for dataset in parsed]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        msg = f"{config_path}: dataset names must differ, {repeated} repeated"
        raise InvalidArgumentError(msg)
    return parsed


def _calibration_rules(config_path: Path, value: Any) -> list[str]:
    """The grid's ``calibration_rules``: extra decision columns per rule (the shipped rule's columns always)."""
    from anomalib_fewshot.components.lifecycle.calibration import RULES

    rules = [] if value is None else value if isinstance(value, list) else [value]
    unknown = [rule for rule in rules if rule not in RULES]
    if unknown:
        msg = f"{config_path}: calibration_rules must name rules from {list(RULES)}, got {unknown}"
        raise InvalidArgumentError(msg)
    return rules


def _int8_setting(config_path: Path, value: Any) -> bool | list[str]:
    """The grid's ``int8``: false, true (each model's own INT8 step) or a list of quantisation scopes to screen."""
    from anomalib_fewshot.components.lifecycle.quantization import SCOPES

    if isinstance(value, bool):
        return value
    if isinstance(value, list) and value and all(v in SCOPES for v in value):
        return [str(v) for v in value]
    msg = f"{config_path}: int8 must be true, false or a list of quantization scopes from {list(SCOPES)}, got {value!r}"
    raise InvalidArgumentError(msg)


def skipped_jobs(config: dict[str, Any], jobs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Jobs matched by the grid's ``skip`` rules (every given field equal, or in a given list), with the reason.

    Jobs whose FDSL head was trained on the job's own dataset are always skipped, and on the development split every
    job with a head (heads train on a dataset's annotated test split, which development mode never reads).
    """
    out = []
    for job in jobs:
        if job.get("head") is not None and job["head"] == job["dataset"]:
            out.append((job, "the head was trained on this dataset's annotated test split"))
            continue
        if job.get("head") is not None and job.get("split") == "dev":
            out.append((job, "heads train on a test split, which a development grid never reads"))
            continue
        reason = _first_matching_rule(job, config["grid"].get("skip"), "left out")
        if reason is not None:
            out.append((job, reason))
    return out


def expected_failures(config: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[tuple[str, ...], str]:
    """Reasons by job key for the jobs matched by the grid's ``expected_failures`` rules (same form as ``skip``).

    Such a job still runs until it has a row; a recorded failure then counts as finished and is not retried.
    """
    out = {}
    for job in jobs:
        reason = _first_matching_rule(job, config["grid"].get("expected_failures"), "expected to fail")
        if reason is not None:
            out[job_key(job)] = reason
    return out


def _first_matching_rule(job: dict[str, Any], rules: list[dict[str, Any]] | None, default: str) -> str | None:
    """The reason of the first rule whose every field equals the job's (or lists it); None when none matches."""
    for rule in rules or []:
        fields = {k: v for k, v in rule.items() if k != "reason"}
        if all(str(job.get(k)) in {str(x) for x in (v if isinstance(v, list) else [v])} for k, v in fields.items()):
            return str(rule.get("reason", default))
    return None


def select_jobs(jobs: list[dict[str, Any]], only: Sequence[str] | None) -> list[dict[str, Any]]:
    """The jobs named by ``--only`` selectors (``MODEL`` or ``MODEL:VARIANT``); every job when ``only`` is empty.

    The variant is everything after the first ``:`` (variants may contain ``:``, e.g. ``dfd_lite+{"epochs":1}``);
    ``Patchcore:`` names the empty variant. A selector that names no model or variant of ``jobs`` is an
    :class:`~anomalib_fewshot.errors.InvalidArgumentError` listing the grid's models, or that model's variants.

    Args:
        jobs: The grid's job specs (see :func:`load_grid`).
        only: Selectors; a job is kept when any selector matches it.

    Returns:
        The matching jobs, in grid order.

    """
    if not only:
        return list(jobs)
    variants: dict[str, list[str]] = {}
    for job in jobs:
        names = variants.setdefault(job["model"], [])
        if job_key(job)[1] not in names:
            names.append(job_key(job)[1])
    wanted: list[tuple[str, str | None]] = []
    for selector in only:
        model, sep, variant = selector.partition(":")
        if model not in variants:
            msg = f"--only {selector}: the grid has no model {model!r}; its models: {', '.join(variants)}"
            raise InvalidArgumentError(msg)
        if sep and variant not in variants[model]:
            listed = ", ".join(repr(v) for v in variants[model])
            msg = f"--only {selector}: model {model} has no variant {variant!r} in this grid; its variants: {listed}"
            raise InvalidArgumentError(msg)
        wanted.append((model, variant if sep else None))
    return [job for job in jobs if any(job["model"] == m and (v is None or job_key(job)[1] == v) for m, v in wanted)]


def select_values(jobs: list[dict[str, Any]], **values: list[Any] | None) -> list[dict[str, Any]]:
    """Keep the jobs whose field ``name`` is one of ``values[name]`` (a ``None`` list keeps every value).

    Args:
        jobs: The grid's job specs.
        **values: Field name -> wanted values, e.g. ``k_shot=[1], seed=[0]``.

    Returns:
        The matching jobs, in grid order.

    Raises:
        InvalidArgumentError: A wanted value that no job of the grid has (named with the values the grid has).

    """
    for name, wanted in values.items():
        if wanted is None:
            continue
        have = sorted({job[name] for job in jobs}, key=str)
        missing = [v for v in wanted if v not in have]
        if missing:
            option = {"k_shot": "--k-shot", "seed": "--seeds", "dataset": "--datasets"}.get(name, name)
            msg = f"{option} {' '.join(map(str, missing))}: the grid has no such {name}; its values: {have}"
            raise InvalidArgumentError(msg)
        jobs = [job for job in jobs if job[name] in wanted]
    return jobs


def head_specs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The grid's ``heads`` by dataset name, with that dataset's root and category; unknown names are errors."""
    datasets = {d["name"]: d for d in config["grid"]["datasets"]}
    specs = {}
    for head in config.get("heads", []) or []:
        name = head.get("dataset")
        if name not in datasets:
            msg = f"heads: dataset {name!r} is not one of the grid's datasets {sorted(datasets)}"
            raise InvalidArgumentError(msg)
        if datasets[name]["folder"]:
            msg = f"heads: dataset {name} is a Folder dataset; FDSL heads train on MVTec-layout datasets"
            raise InvalidArgumentError(msg)
        specs[name] = {**datasets[name], **head}
    for model in config["grid"]["models"]:
        if model.get("head") is not None and model["head"] not in specs:
            msg = f"model {model['model']} uses head {model['head']!r}, which is not listed under heads"
            raise InvalidArgumentError(msg)
    return specs


def head_path(jobs_dir: Path, spec: dict[str, Any]) -> Path:
    """Where the head trained on ``spec``'s dataset with its profile is kept."""
    return jobs_dir / "heads" / f"{spec['profile']}_{spec['dataset']}.pt"


def job_work_dir(jobs_dir: Path, job: dict[str, Any]) -> Path:
    """A job's work folder (log, checkpoint, ``export/``): ``jobs_dir/<job key joined by '_', sanitised>``.

    A test-split job's name leaves its split out, a job trained with its few-shot seed its training seed
    (:func:`.store.name_parts`: the folders of rows recorded before either existed keep their names).
    """
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in "_".join(name_parts(job)))
    return jobs_dir / name


def jobs_dir_of(config: dict[str, Any], output: Path) -> Path:
    """The grid's ``jobs_dir`` (default: ``<output>/jobs``)."""
    return Path(config.get("jobs_dir") or output / "jobs")
