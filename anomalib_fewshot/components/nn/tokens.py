"""Multi-level patch-token extractors: open_clip ViTs (FDSL's paper backbone) and CNN backbones (offline profiles).

Both return, for normalised images ``(B, 3, S, S)``, a list of ``(B, C_l, g, g)`` maps on one common grid of
``g = S / patch`` cells, so a model (FDSL's heads, NAM and LFE windows) never needs to know which kind of
backbone produced them. Construction never downloads or reads weights; :meth:`load_weights` does, when
fitting starts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_fewshot.components.nn.backbones import Backbone, FrozenExtractor, WeightsError, load_state_dict_file
from anomalib_fewshot.errors import InvalidArgumentError, MissingDependencyError

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_positional_embedding(embedding: torch.Tensor, grid: int) -> torch.Tensor:
    """Resize a ``(1 + g0², W)`` ViT positional embedding to ``(1 + grid², W)`` (bicubic, antialiased).

    The class-token row is kept as it is; the patch rows are resized as a ``g0 × g0`` image, as open_clip's
    ``resize_pos_embed`` does for the FDSL code's 24 → 37 grid.
    """
    cls_row, patches = embedding[:1], embedding[1:]
    old = round(patches.shape[0] ** 0.5)
    if old * old != patches.shape[0]:
        msg = f"positional embedding with {patches.shape[0]} patch rows is not a square grid"
        raise InvalidArgumentError(msg)
    if old == grid:
        return embedding.clone()
    image = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    resized = F.interpolate(image, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([cls_row.float(), resized[0].permute(1, 2, 0).reshape(grid * grid, -1)], dim=0)


class TokenExtractor(FrozenExtractor):
    """Interface: ``forward(images, window)`` → per-level ``(B, C_l, g, g)`` maps of normalised images.

    ``forward_embedded(images, window)`` also returns one pooled image embedding ``(B, D)`` per input (the
    image-index window memory picks reference windows with it).
    """

    channels: list[int]
    patch: int

    def forward_embedded(
        self, images: torch.Tensor, window: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor]:  # pragma: no cover - interface
        """Per-level maps and a pooled embedding ``(B, D)`` of normalised images."""
        raise NotImplementedError


class ClipTokens(TokenExtractor):
    """Intermediate patch tokens of an open_clip vision transformer (no ``ln_post``, no projection, no CLS).

    Args:
        name: open_clip model name (``"ViT-L-14-336"``); its vision tower is built with random weights.
        layers: 1-based transformer blocks whose outputs are returned (6, 12, 18, 24).
        image_size: input size of the global branch (518: a 37×37 grid for patch 14).
        window_size: input size of the LFE windows (182: 13×13); a second positional-embedding buffer.
        pre_trained: load open_clip's ``pretrained_tag`` weights in :meth:`load_weights` (downloads).
        pretrained_tag: open_clip pretrained tag (``"openai"``).
        weights_path: local file with the CLIP (or vision-tower) state dict, or the OpenAI TorchScript archive.
        vision_cfg: build a custom vision tower instead of ``name`` (open_clip ``CLIPVisionCfg`` fields, e.g.
            ``{"width": 64, "layers": 4, "head_width": 32, "patch_size": 14, "image_size": 28}``): small
            random ViTs for tests, or a ViT whose weights come from ``weights_path``.
        quick_gelu: QuickGELU activations (the OpenAI weights need them).
        embedding: also keep every block, ``ln_post`` and the projection, for the pooled, projected CLS
            embedding of :meth:`forward_embedded` (the image-index window memory; CLIP's image embedding).

    """

    def __init__(
        self,
        name: str = "ViT-L-14-336",
        layers: Sequence[int] = (6, 12, 18, 24),
        image_size: int = 518,
        window_size: int = 182,
        pre_trained: bool = True,
        pretrained_tag: str = "openai",
        weights_path: str | Path | None = None,
        vision_cfg: dict[str, Any] | None = None,
        quick_gelu: bool = True,
        embedding: bool = False,
    ) -> None:
        super().__init__()
        try:
            import open_clip
            from open_clip.model import CLIPVisionCfg, _build_vision_tower
        except ImportError as exc:  # pragma: no cover - depends on the environment
            msg = "FDSL's CLIP backbone needs open_clip: pip install 'anomalib[clip]' (or open-clip-torch)"
            raise MissingDependencyError(msg) from exc
        if vision_cfg is None:
            config = open_clip.get_model_config(name)
            if config is None:
                msg = f"Unknown open_clip model '{name}'; available: {open_clip.list_models()[:10]} ..."
                raise InvalidArgumentError(msg)
            embed_dim, cfg = config["embed_dim"], dict(config["vision_cfg"])
        else:
            embed_dim, cfg = (
                int(vision_cfg.get("embed_dim", 32)),
                {k: v for k, v in vision_cfg.items() if k != "embed_dim"},
            )
        visual = _build_vision_tower(embed_dim, CLIPVisionCfg(**cfg), quick_gelu=quick_gelu)
        self.name = name if vision_cfg is None else "custom-vit"
        self.layers = [int(layer) for layer in layers]
        depth = len(visual.transformer.resblocks)
        if not self.layers or min(self.layers) < 1 or max(self.layers) > depth:
            msg = f"layers must be block numbers in 1..{depth}, got {self.layers}"
            raise InvalidArgumentError(msg)
        self.patch = int(visual.conv1.kernel_size[0])
        for label, size in (("image_size", image_size), ("window_size", window_size)):
            if size % self.patch:
                msg = f"{label} ({size}) must be a multiple of the ViT patch size ({self.patch})"
                raise InvalidArgumentError(msg)
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.ln_pre = visual.ln_pre
        self.embedding = bool(embedding)
        kept = depth if self.embedding else max(self.layers)
        self.blocks = nn.ModuleList(list(visual.transformer.resblocks)[:kept])
        if self.embedding:  # CLIP's image embedding: ln_post of the last block's CLS, then the projection
            self.ln_post = visual.ln_post
            self.proj = visual.proj
        width = self.conv1.out_channels
        self.channels = [width] * len(self.layers)
        self.grid_global = image_size // self.patch
        self.grid_window = window_size // self.patch
        self.register_buffer("pos_global", torch.empty(1 + self.grid_global**2, width))
        self.register_buffer("pos_window", torch.empty(1 + self.grid_window**2, width))
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1))
        self.pre_trained = pre_trained
        self.pretrained_tag = pretrained_tag
        self.weights_path = None if weights_path in (None, "") else Path(weights_path)
        self.weights_loaded = False
        self._refresh_positions()
        self.freeze()

    def _refresh_positions(self) -> None:
        with torch.no_grad():
            self.pos_global.copy_(resize_positional_embedding(self.positional_embedding, self.grid_global))
            self.pos_window.copy_(resize_positional_embedding(self.positional_embedding, self.grid_window))

    def forward(self, images: torch.Tensor, window: bool = False) -> list[torch.Tensor]:
        """Tokens of the configured blocks as ``(B, width, g, g)`` maps (``window`` picks the window grid)."""
        return self._run(images, window, embed=False)[0]

    def forward_embedded(self, images: torch.Tensor, window: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Tokens as :meth:`forward` and CLIP's projected image embedding ``(B, D)`` (needs ``embedding=True``)."""
        if not self.embedding:
            msg = "this CLIP backbone was built without its projection: construct it with embedding=True"
            raise InvalidArgumentError(msg)
        maps, embedded = self._run(images, window, embed=True)
        return maps, embedded

    def _run(self, images: torch.Tensor, window: bool, embed: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        positions = self.pos_window if window else self.pos_global
        x = self.conv1(images)
        batch, width, grid = x.shape[0], x.shape[1], x.shape[-1]
        x = x.flatten(2).transpose(1, 2)
        cls_token = self.class_embedding.view(1, 1, -1).expand(batch, -1, -1).to(x.dtype)
        x = torch.cat([cls_token, x], dim=1) + positions.to(x.dtype)
        x = self.ln_pre(x).transpose(0, 1)  # open_clip's blocks are sequence-first
        outputs = []
        blocks = self.blocks if embed else self.blocks[: max(self.layers)]
        for index, block in enumerate(blocks, start=1):
            x = block(x)
            if index in self.layers:
                tokens = x[1:].transpose(0, 1)  # (B, g², width), CLS dropped
                outputs.append(tokens.transpose(1, 2).reshape(batch, width, grid, grid))
        if not embed:
            return outputs, None
        pooled = self.ln_post(x[0])
        return outputs, pooled @ self.proj if self.proj is not None else pooled

    def load_weights(self) -> None:
        """Load local or open_clip weights into the kept blocks and recompute the positional buffers."""
        if self.weights_loaded:
            return
        if self.weights_path is not None:
            state = self._read_weights_file(self.weights_path)
            source = str(self.weights_path)
        elif self.pre_trained:
            state, source = self._download_weights(), f"open_clip:{self.name}/{self.pretrained_tag}"
        else:
            logger.info("CLIP backbone keeps random weights (pre_trained=False).")
            self.weights_loaded = True
            return
        self._load_visual_state(state, source)
        self._refresh_positions()
        self.weights_loaded = True

    @staticmethod
    def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
        try:
            return load_state_dict_file(path)
        except WeightsError:
            if not path.is_file():
                raise
        try:  # the OpenAI release is a TorchScript archive
            return torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as exc:
            msg = f"Could not read CLIP weights file '{path}' (neither a state dict nor a TorchScript archive): {exc}"
            raise WeightsError(msg) from exc

    def _download_weights(self) -> dict[str, torch.Tensor]:
        import open_clip

        try:
            model = open_clip.create_model(self.name, pretrained=self.pretrained_tag)
        except Exception as exc:
            msg = (
                f"Could not load open_clip weights '{self.name}' / '{self.pretrained_tag}' ({exc!r}). Offline, pass "
                "weights_path=<local CLIP state dict or the OpenAI .pt file>, or use a CNN backbone with registry "
                "weights (configs/model/fdsl_lite.yaml)."
            )
            raise WeightsError(msg) from exc
        return model.state_dict()

    def _load_visual_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        if any(key.startswith("visual.") for key in state):
            state = {key[len("visual.") :]: value for key, value in state.items() if key.startswith("visual.")}
        renamed = {}
        for key, value in state.items():
            if key.startswith("transformer.resblocks."):
                index = int(key.split(".")[2])
                if index >= len(self.blocks):
                    continue
                key = "blocks." + key[len("transformer.resblocks.") :]
            renamed[key] = value
        own = {k: v for k, v in self.state_dict().items() if k not in ("pos_global", "pos_window", "mean", "std")}
        missing = sorted(set(own) - set(renamed))
        bad = [k for k in own if k in renamed and renamed[k].shape != own[k].shape]
        if missing or bad:
            msg = (
                f"Weights from '{source}' do not fit the CLIP backbone '{self.name}': "
                f"missing {missing[:5]} ({len(missing)}), shape mismatch {bad[:5]}"
            )
            raise WeightsError(msg)
        self.load_state_dict({**self.state_dict(), **{k: renamed[k].float() for k in own}}, strict=True)
        logger.info("Loaded CLIP vision weights from %s", source)


class CnnTokens(TokenExtractor):
    """CNN feature levels on the first level's grid (deeper levels up-sampled bilinearly).

    Args:
        name: timm backbone (``"tf_efficientnet_lite0"``) or ``"mobilenet_v2"``.
        layers: feature modules (e.g. ``("blocks.2", "blocks.4")``).
        image_size: input size of the global branch; must be a multiple of the first level's stride.
        pre_trained: load ImageNet weights (offline registry packages, or timm) when fitting starts.
        weights_path: local backbone state-dict file.

    """

    def __init__(
        self,
        name: str,
        layers: Sequence[str],
        image_size: int,
        pre_trained: bool = True,
        weights_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.backbone = Backbone(name, layers, pre_trained=pre_trained, weights_path=weights_path)
        self.name = name
        with torch.no_grad():
            probe = self.backbone.network(torch.zeros(1, 3, image_size, image_size))
        self.channels = [int(f.shape[1]) for f in probe]
        grid = int(probe[0].shape[-1])
        if image_size % grid:
            msg = f"image_size ({image_size}) must be a multiple of the first level's stride for backbone {name}"
            raise InvalidArgumentError(msg)
        self.patch = image_size // grid
        self.register_buffer("mean", self.backbone.mean.clone())
        self.register_buffer("std", self.backbone.std.clone())
        self.freeze()

    def forward(self, images: torch.Tensor, window: bool = False) -> list[torch.Tensor]:
        """Feature levels of normalised ``images``, all on the first level's grid."""
        return self.forward_embedded(images, window)[0]

    def forward_embedded(self, images: torch.Tensor, window: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Feature levels as :meth:`forward` and the deepest level's global average pool ``(B, C_last)``.

        A CNN has no projected image embedding; its pooled last level is the image descriptor classifiers use.
        """
        del window  # a CNN takes any input size
        features = self.backbone(images)
        size = features[0].shape[-2:]
        maps = [
            f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            for f in features
        ]
        return maps, features[-1].mean(dim=(-2, -1))

    def load_weights(self) -> None:
        """Load the backbone's weights (idempotent)."""
        self.backbone.load_weights()
