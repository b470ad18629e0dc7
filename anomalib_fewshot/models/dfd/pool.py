"""DFD's training pool: frozen features of the augmented shots, cached once per fit (float16 above a size).

The pool holds, per sample, the features of the normal image and, only for samples that carry a Perlin
pseudo-anomaly, those of the anomalous image; masks and labels beside. What is cached (raw backbone features, or
the locally aggregated tokens when they are smaller) and in which dtype is decided from one probe image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from anomalib_fewshot.components.lifecycle.feature_cache import (
    CACHE_FP16_ABOVE_BYTES,
    CacheDtype,
    cache_outputs,
    resolve_cache_dtype,
)

if TYPE_CHECKING:
    from anomalib_fewshot.models.dfd.torch_model import DfdModel

#: ``cache_stage``: what the pool caches (``auto``: aggregated tokens when they fit under the float32 threshold).
CacheStage = Literal["auto", "aggregated", "backbone"]


@dataclass
class FeaturePool:
    """The augmented shot pool: cached backbone features of normal and pseudo-anomalous images."""

    normal: list[torch.Tensor]  # per level (n, P, C, h, w); or one (n, P, N, D) tensor when aggregated
    anomalous: list[torch.Tensor]  # the same for the m samples that carry a pseudo-anomaly only
    anomalous_row: torch.Tensor  # (n,) row in ``anomalous`` or -1 (no anomaly: the image equals the normal one)
    masks: torch.Tensor  # (n, 1, H, W) uint8
    labels: torch.Tensor  # (n,)
    aggregated: bool  # cache holds locally aggregated tokens (else raw backbone features)

    def __len__(self) -> int:
        return len(self.labels)

    def nbytes(self) -> int:
        """Bytes held by the pool's tensors."""
        tensors = [*self.normal, *self.anomalous, self.anomalous_row, self.masks, self.labels]
        return sum(t.numel() * t.element_size() for t in tensors)

    def cached(self, kind: str, indices: torch.Tensor) -> list[torch.Tensor]:
        """Cached entries ``(b, P, ...)`` per level of the ``"normal"`` or ``"anomalous"`` images of ``indices``.

        Samples without a pseudo-anomaly have no anomalous entry: their anomalous image is the normal one.
        """
        normal = [level[indices] for level in self.normal]
        if kind == "normal":
            return normal
        rows = self.anomalous_row[indices]
        has = rows >= 0
        if not bool(has.any()):
            return normal
        mixed = []
        for normal_level, anomalous_level in zip(normal, self.anomalous, strict=True):
            level = normal_level.clone()
            level[has] = anomalous_level[rows[has]]
            mixed.append(level)
        return mixed


def cache_plan(
    model: DfdModel, probe: list[torch.Tensor], n_images: int, stage: CacheStage, dtype_policy: CacheDtype
) -> tuple[bool, torch.dtype, int]:
    """What to cache for ``n_images`` images, from one image's backbone features: (aggregated tokens?, dtype, bytes)."""
    num_paths = model.num_paths
    raw_floats = sum(f[0].numel() for f in probe) * num_paths * n_images
    with torch.no_grad():
        token_floats = model.aggregate(probe)[0].numel() * num_paths * n_images
    if stage == "auto":
        stage = "aggregated" if token_floats * 4 <= CACHE_FP16_ABOVE_BYTES else "backbone"
    aggregated = stage == "aggregated"
    floats = token_floats if aggregated else raw_floats
    dtype = resolve_cache_dtype(dtype_policy, floats)
    return aggregated, dtype, floats * torch.empty(0, dtype=dtype).element_size()


def cache_features(
    model: DfdModel,
    normal: list[torch.Tensor],
    anomalous: list[torch.Tensor],
    device: torch.device,
    stage: CacheStage,
    dtype_policy: CacheDtype,
    chunk: int = 16,
) -> tuple[list[torch.Tensor], list[torch.Tensor], bool]:
    """Run the frozen part once per pool image; return the caches and whether they hold aggregated tokens."""
    num_paths = model.num_paths
    probe = model.backbone_features(normal[0][None].to(device))
    aggregated, dtype, _ = cache_plan(model, probe, len(normal) + len(anomalous), stage, dtype_policy)

    def extract(batch: torch.Tensor) -> list[torch.Tensor]:
        feats = model.backbone_features(batch)
        if aggregated:
            feats = [model.aggregate(feats)]
        return [f.reshape(num_paths, len(batch), *f.shape[1:]).transpose(0, 1) for f in feats]

    caches = [cache_outputs(images, extract, dtype, chunk, device) for images in (normal, anomalous)]
    return caches[0], caches[1], aggregated
