"""A cache of frozen-backbone outputs for a fixed training pool, computed once and kept on the CPU.

Methods that train many epochs on a fixed, augmented pool (DFD, ED) run their frozen extractor once per pool
image. Above :data:`CACHE_FP16_ABOVE_BYTES` of float32 the cache is kept in float16 (policy ``"auto"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

#: float32 cache size above which the ``"auto"`` policy stores float16.
CACHE_FP16_ABOVE_BYTES = 1 << 30

CacheDtype = Literal["auto", "float32", "float16"]


def resolve_cache_dtype(policy: CacheDtype, n_floats: int) -> torch.dtype:
    """The cache dtype for ``n_floats`` values: the policy's, or float16 above the limit for ``"auto"``."""
    if policy == "float32":
        return torch.float32
    if policy == "float16":
        return torch.float16
    return torch.float16 if n_floats * 4 > CACHE_FP16_ABOVE_BYTES else torch.float32


@torch.no_grad()
def cache_outputs(
    images: Sequence[torch.Tensor],
    extract: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    dtype: torch.dtype | CacheDtype = "auto",
    chunk: int = 16,
    device: torch.device | str = "cpu",
    visit: Callable[[int, Sequence[torch.Tensor]], None] | None = None,
) -> list[torch.Tensor]:
    """Run ``extract`` on ``images`` in chunks and store its outputs (one CPU tensor per output) in ``dtype``.

    Args:
        images: ``(3, H, W)`` images of the pool.
        extract: the frozen part of the model: a ``(b, 3, H, W)`` batch to a list of ``(b, ...)`` outputs.
        dtype: a dtype, or a :func:`resolve_cache_dtype` policy applied to the size of the whole cache.
        chunk: images per forward pass.
        device: where ``extract`` runs.
        visit: called with ``(start index, outputs)`` after each chunk (e.g. to accumulate statistics).

    Returns:
        One ``(len(images), ...)`` tensor per output of ``extract``.

    """
    cache: list[torch.Tensor] = []
    for start in range(0, len(images), chunk):
        batch = torch.stack(list(images[start : start + chunk])).to(device)
        outputs = extract(batch)
        if not cache:
            if not isinstance(dtype, torch.dtype):
                dtype = resolve_cache_dtype(dtype, sum(o[0].numel() for o in outputs) * len(images))
            cache = [torch.empty(len(images), *o.shape[1:], dtype=dtype) for o in outputs]
        for stored, output in zip(cache, outputs, strict=True):
            stored[start : start + len(batch)] = output.to("cpu", dtype)
        if visit is not None:
            visit(start, outputs)
    return cache
