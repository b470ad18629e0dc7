"""Access to the model configs shipped with the package (``configs/`` in the repository and the wheel)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anomalib_fewshot.errors import InvalidArgumentError, MissingFileError


def config_dir() -> Path:
    """The ``configs`` folder: inside the installed wheel, else next to the package in a source checkout."""
    packaged = Path(__file__).parent / "configs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "configs"


def model_config_path(name: str) -> Path:
    """Path of ``configs/model/<name>.yaml`` (e.g. ``"dfd_lite"``)."""
    path = config_dir() / "model" / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
        msg = f"no model config '{name}'; available: {available}"
        raise MissingFileError(msg)
    return path


def model_init_args(name: str, **overrides: Any) -> dict[str, Any]:
    """Constructor arguments of a shipped profile, with ``overrides`` applied.

    Example:
        >>> from anomalib_fewshot.models import Dfd
        >>> model = Dfd(**model_init_args("dfd_lite", k_shot=2))  # doctest: +SKIP

    """
    import yaml

    config = yaml.safe_load(model_config_path(name).read_text())
    init_args = dict(config["model"].get("init_args", {}))
    init_args.update(overrides)
    return init_args


def parse_set_overrides(items: Sequence[str]) -> dict[str, object]:
    """``--set KEY=VALUE`` items as constructor arguments (values parsed as YAML).

    Raises:
        InvalidArgumentError: an item without ``=`` or without a key.

    """
    import yaml

    overrides: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            msg = f"--set {item!r}: expected KEY=VALUE"
            raise InvalidArgumentError(msg)
        overrides[key] = yaml.safe_load(value)
    return overrides
