"""FDSL head-weights files: the learned heads and NAM with what they must match (backbone widths, head, NAM).

:func:`save_head_weights` writes one (``anomalib-fewshot fdsl-pretrain`` does, see :mod:`.head`) and
``Fdsl(head_weights=...)`` reads it with :func:`load_head_weights`; a file for another configuration is a clear
:class:`HeadWeightsError`, never a shape traceback.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from anomalib_fewshot.components.io.atomic import atomic_write_bytes
from anomalib_fewshot.errors import AnomalibFewshotError
from anomalib_fewshot.models.fdsl.torch_model import FdslModel

HEAD_FORMAT = "anomalib_fewshot.fdsl_head"
HEAD_FORMAT_VERSION = 1


class HeadWeightsError(AnomalibFewshotError, ValueError):
    """A head-weights file that is missing, unreadable or made for another configuration."""


def save_head_weights(model: FdslModel, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write the heads and NAM of ``model`` (plus what they must match and ``metadata``) atomically to ``path``."""
    payload = {
        "format": HEAD_FORMAT,
        "version": HEAD_FORMAT_VERSION,
        "signature": model.head_signature(),
        "metadata": dict(metadata or {}),
        "state_dict": model.head_state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_head_weights(path: str | Path) -> dict[str, Any]:
    """Read and check a head-weights file (``weights_only`` loading)."""
    path = Path(path)
    if not path.is_file():
        msg = (
            f"FDSL head-weights file not found: '{path}'. Train one with `anomalib-fewshot fdsl-pretrain`, "
            "or pass head_weights=None for the pseudo-anomaly head."
        )
        raise HeadWeightsError(msg)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = f"Could not read FDSL head-weights file '{path}': {exc}"
        raise HeadWeightsError(msg) from exc
    if not isinstance(payload, dict) or payload.get("format") != HEAD_FORMAT:
        msg = f"'{path}' is not an FDSL head-weights file (written by anomalib_fewshot.models.fdsl.save_head_weights)"
        raise HeadWeightsError(msg)
    return payload


def load_head_weights(model: FdslModel, path: str | Path) -> dict[str, Any]:
    """Load a head-weights file into ``model``; a file for another backbone or head is a clear error."""
    payload = read_head_weights(path)
    expected, found = model.head_signature(), payload.get("signature", {})
    if expected != found:
        msg = (
            f"FDSL head-weights file '{path}' was trained for {found} but the model has {expected}: "
            "use the same backbone, layers, head_dims and nam as in fdsl-pretrain."
        )
        raise HeadWeightsError(msg)
    state = payload["state_dict"]
    model.heads.load_state_dict({k[len("heads.") :]: v for k, v in state.items() if k.startswith("heads.")})
    if model.nam is not None:
        model.nam.load_state_dict({k[len("nam.") :]: v for k, v in state.items() if k.startswith("nam.")})
    return payload.get("metadata", {})
