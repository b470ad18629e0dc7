"""DFD torch model: frozen backbone on low/high-frequency images, adaptor and two discriminators.

Pure torch (no Lightning): everything fitted lives in parameters or buffers, and the eval forward is one
static graph (no data-dependent control flow, no loop over the batch), so it exports to ONNX/OpenVINO.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from anomalib_fewshot.components.lifecycle.arguments import check_arguments
from anomalib_fewshot.components.nn.backbones import Backbone
from anomalib_fewshot.components.nn.features import LocalAggregation
from anomalib_fewshot.components.nn.frequency import GaussianPyramidSplit
from anomalib_fewshot.components.nn.scoring import BranchNormalizer, GaussianSmoothing, ImageScore, ImageScoreRule
from anomalib_fewshot.errors import InvalidArgumentError

FrequencyPaths = Literal["low_high", "low", "high", "full"]
PerlinHead = Literal["vit", "mlp"]
PerlinInit = Literal["code", "xavier"]


def _xavier_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.xavier_normal_(layer.weight)
    return layer


class GaussianDiscriminator(nn.Module):
    """Token-wise MLP ``Linear → BatchNorm1d → LeakyReLU(0.2) → Linear(→1, no bias)``; positive = normal."""

    def __init__(self, dim: int, hidden_dim: int = 1024) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _xavier_linear(dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.LeakyReLU(0.2),
            _xavier_linear(hidden_dim, 1, bias=False),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, D)`` → ``(B, N)`` logits."""
        batch, num_tokens, dim = tokens.shape
        return self.body(tokens.reshape(batch * num_tokens, dim)).reshape(batch, num_tokens)


class PerlinDiscriminator(nn.Module):
    """``Linear+BN+LeakyReLU`` token-wise, then a small ViT over all tokens (CLS + learned pos-embed), ``Linear→1``.

    With ``head="mlp"`` the ViT is replaced by a second token-wise ``Linear+BN+LeakyReLU`` (paper Table 5).
    The learned position embedding fixes the number of tokens (``num_tokens``, i.e. the input size).

    ``init="code"`` initialises as the official ``Discriminator_perlin``: PyTorch's default for the token-wise
    linear layers and the output, the CLS token ``N(0, 1e-6)``; ``"xavier"`` (the lite profile's first
    implementation) uses Xavier-normal linear layers and a trunc-normal(0.02) CLS token. Both: position embedding
    trunc-normal(0.02), ViT linear layers trunc-normal(0.02) with zero biases (timm's ViT init, as the code).
    """

    def __init__(
        self,
        dim: int,
        num_tokens: int,
        num_heads: int = 16,
        depth: int = 1,
        mlp_ratio: float = 4.0,
        head: PerlinHead = "vit",
        init: PerlinInit = "code",
    ) -> None:
        super().__init__()
        check_arguments(PerlinDiscriminator.__init__, locals())
        linear = _xavier_linear if init == "xavier" else nn.Linear
        if head == "vit" and dim % num_heads:
            msg = f"embedding dim {dim} is not divisible by perlin_num_heads={num_heads}"
            raise InvalidArgumentError(msg)
        self.head_type = head
        self.stem = nn.Sequential(linear(dim, dim), nn.BatchNorm1d(dim), nn.LeakyReLU(0.2))
        if head == "vit":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens + 1, dim))
            if init == "xavier":
                trunc_normal_(self.cls_token, std=0.02)
            else:
                nn.init.normal_(self.cls_token, std=1e-6)
            trunc_normal_(self.pos_embed, std=0.02)
            norm = partial(nn.LayerNorm, eps=1e-6)
            self.blocks = nn.Sequential(
                *[Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)]
            )
            self.norm = norm(dim)
            self.blocks.apply(self._init_vit)
        else:
            self.mlp = nn.Sequential(linear(dim, dim), nn.BatchNorm1d(dim), nn.LeakyReLU(0.2))
        self.out = linear(dim, 1, bias=False)

    @staticmethod
    def _init_vit(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, D)`` → ``(B, N)`` logits (positive = normal)."""
        batch, num_tokens, dim = tokens.shape
        x = self.stem(tokens.reshape(batch * num_tokens, dim))
        if self.head_type == "vit":
            x = x.reshape(batch, num_tokens, dim)
            x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1) + self.pos_embed
            x = self.norm(self.blocks(x))[:, 1:]
        else:
            x = self.mlp(x).reshape(batch, num_tokens, dim)
        return self.out(x).squeeze(-1)


class DfdModel(nn.Module):
    """Dual-path Frequency Discriminators (Bai et al., arXiv 2403.04151).

    Input: ``(B, 3, H, W)`` RGB images in ``[0, 1]`` (already resized to ``image_size``). The model flips to
    BGR (``bgr_input``, as the reference code feeds OpenCV images), splits each image into low/high frequency
    images, normalises each with the backbone's statistics and runs the frozen backbone on both (one batch).

    Eval output: :class:`~anomalib.data.InferenceBatch` with ``pred_score`` ``(B,)`` and ``anomaly_map``
    ``(B, 1, H, W)``: the average of the enabled discriminators' maps (each summed over the frequency paths,
    up-sampled, Gaussian-smoothed and normalised with statistics fitted on the training pool).

    Args:
        backbone: backbone name (see :class:`~anomalib_fewshot.components.nn.backbones.Backbone`).
        layers: two (or more) feature layers; the first sets the token grid.
        pre_trained: load ImageNet weights when fitting starts.
        weights_path: local backbone weights file.
        image_size: square input size; fixes the number of tokens of the Perlin discriminator.
        patch_size: local aggregation neighbourhood.
        pretrain_embed_dim: per-level dimension in the aggregation.
        target_embed_dim: token dimension ``D`` of adaptor and discriminators.
        gaussian_hidden_dim: hidden width of the Gaussian discriminator.
        perlin_num_heads: attention heads of the Perlin ViT block.
        perlin_depth: number of ViT blocks.
        perlin_mlp_ratio: ViT MLP ratio.
        perlin_head: ``"vit"`` (paper) or ``"mlp"`` (Table 5 ablation).
        perlin_init: Perlin discriminator initialisation: ``"code"`` (the official code: PyTorch defaults for its
            linear layers, CLS token ``N(0, 1e-6)``) or ``"xavier"`` (Xavier-normal linear layers, CLS
            trunc-normal(0.02); ``dfd_lite``'s setting, see the README's Deviations).
        frequency_paths: ``"low_high"`` (MFIC, paper), ``"low"``, ``"high"`` or ``"full"`` (no MFIC).
        bgr_input: feed BGR channel order like the reference code.
        use_gaussian_discriminator: enable the Gaussian (feature-noise) discriminator.
        use_perlin_discriminator: enable the Perlin (image-anomaly) discriminator.
        smoothing_sigma: Gaussian smoothing of the maps (0 disables).
        perlin_weight: weight of the Perlin discriminator in the fused score and map, ``w·perlin + (1 − w)·gaussian``
            after each branch's normalisation; ``0.5`` is the code's average. Inference only (used when both
            discriminators are enabled); a plain attribute, so it can be changed on a fitted model.
        image_score: the image score shipped (:class:`~anomalib_fewshot.components.nn.scoring.ImageScore`):
            ``"model"`` (the method's own, default), or from the map: ``"max"``, ``"top1"``, ``"resid"``, ``"z"``.

    """

    def __init__(
        self,
        backbone: str = "wide_resnet50_2.tv_in1k",
        layers: Sequence[str] = ("layer2", "layer3"),
        pre_trained: bool = True,
        weights_path: str | None = None,
        image_size: int = 256,
        patch_size: int = 3,
        pretrain_embed_dim: int = 1536,
        target_embed_dim: int = 1536,
        gaussian_hidden_dim: int = 1024,
        perlin_num_heads: int = 16,
        perlin_depth: int = 1,
        perlin_mlp_ratio: float = 4.0,
        perlin_head: PerlinHead = "vit",
        perlin_init: PerlinInit = "code",
        frequency_paths: FrequencyPaths = "low_high",
        bgr_input: bool = True,
        use_gaussian_discriminator: bool = True,
        use_perlin_discriminator: bool = True,
        smoothing_sigma: float = 4.0,
        perlin_weight: float = 0.5,
        image_score: ImageScoreRule = "model",
    ) -> None:
        super().__init__()
        check_arguments(DfdModel.__init__, locals(), unit_interval=("perlin_weight",))
        self.image_score = ImageScore(image_score)
        if not (use_gaussian_discriminator or use_perlin_discriminator):
            msg = "at least one of use_gaussian_discriminator / use_perlin_discriminator must be True"
            raise InvalidArgumentError(msg)
        self.perlin_weight = float(perlin_weight)
        self.frequency_paths = frequency_paths
        self.num_paths = 2 if frequency_paths == "low_high" else 1
        self.bgr_input = bgr_input
        self.image_size = image_size
        self.use_gaussian = use_gaussian_discriminator
        self.use_perlin = use_perlin_discriminator

        self.backbone = Backbone(backbone, layers, pre_trained=pre_trained, weights_path=weights_path)
        self.split = GaussianPyramidSplit()
        channels, grid = self._probe_backbone(image_size)
        self.grid = grid
        self.aggregate = LocalAggregation(channels, pretrain_embed_dim, target_embed_dim, patch_size)
        self.adaptor = _xavier_linear(target_embed_dim, target_embed_dim)
        self.gaussian = GaussianDiscriminator(target_embed_dim, gaussian_hidden_dim) if self.use_gaussian else None
        self.perlin = (
            PerlinDiscriminator(
                target_embed_dim,
                grid[0] * grid[1],
                num_heads=perlin_num_heads,
                depth=perlin_depth,
                mlp_ratio=perlin_mlp_ratio,
                head=perlin_head,
                init=perlin_init,
            )
            if self.use_perlin
            else None
        )
        self.smoothing = GaussianSmoothing(smoothing_sigma)
        self.gaussian_norm = BranchNormalizer()
        self.perlin_norm = BranchNormalizer()

    def _probe_backbone(self, image_size: int) -> tuple[list[int], tuple[int, int]]:
        if image_size % 8:
            msg = f"image_size must be a multiple of 8, got {image_size}"
            raise InvalidArgumentError(msg)
        with torch.no_grad():
            features = self.backbone(torch.zeros(1, 3, image_size, image_size))
        return [f.shape[1] for f in features], tuple(features[0].shape[-2:])

    # ------------------------------------------------------------------ features
    def frequency_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` in ``[0,1]`` → normalised backbone inputs ``(P·B,3,H,W)``, path-major (low, then high)."""
        if self.bgr_input:
            images = images.flip(1)
        if self.frequency_paths == "full":
            paths = [images]
        else:
            low, high = self.split(images)
            paths = {"low_high": [low, high], "low": [low], "high": [high]}[self.frequency_paths]
        return self.backbone.normalize(torch.cat(paths, dim=0))

    def backbone_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Frozen backbone features of ``images`` for every frequency path (``(P·B, C_l, h_l, w_l)`` each)."""
        with torch.no_grad():
            return self.backbone(self.frequency_inputs(images))

    def embed(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone features → adapted tokens ``(n, N, D)`` (local aggregation + adaptor)."""
        return self.adaptor(self.aggregate(features))

    # ------------------------------------------------------------------ scoring
    def token_map(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Discriminator logits ``(P·B, N)`` → anomaly map ``(B, 1, H, W)``: negate, up-sample, smooth, sum paths."""
        maps = (-logits).reshape(-1, 1, *self.grid)
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
        maps = self.smoothing(maps)
        return maps.reshape(self.num_paths, -1, 1, *size).sum(0)

    def branch_maps(self, tokens: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Raw (un-normalised) per-discriminator maps for adapted ``tokens`` of ``P·B`` images."""
        maps = {}
        if self.gaussian is not None:
            maps["gaussian"] = self.token_map(self.gaussian(tokens), size)
        if self.perlin is not None:
            maps["perlin"] = self.token_map(self.perlin(tokens), size)
        return maps

    def fuse(self, maps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise each branch with its fitted statistics and mix them (``perlin_weight``): ``(score, map)``.

        With one discriminator its normalised score and map are returned as they are.
        """
        score, fused_map = 0.0, 0.0
        for name, branch_map in maps.items():
            normalizer = self.gaussian_norm if name == "gaussian" else self.perlin_norm
            weight = 1.0 if len(maps) == 1 else (self.perlin_weight if name == "perlin" else 1.0 - self.perlin_weight)
            score = score + weight * normalizer.normalize_score(branch_map.amax(dim=(1, 2, 3)))
            fused_map = fused_map + weight * normalizer.normalize_map(branch_map)
        return score, fused_map

    @torch.no_grad()
    def fit_normalizers(self, token_batches: Iterable[torch.Tensor], size: tuple[int, int]) -> int:
        """Fit each branch's score statistics on the raw maps of adapted token batches ``(P·b, N, D)``.

        Returns the number of images seen. Runs in eval mode (restores the previous mode).
        """
        was_training = self.training
        self.eval()
        stats: dict[str, list[torch.Tensor]] = {}
        count = 0
        for tokens in token_batches:
            for name, branch_map in self.branch_maps(tokens, size).items():
                flat = branch_map.flatten(1)
                stats.setdefault(name, []).append(torch.stack([flat.amin(1), flat.amax(1)]).cpu())
            count += len(tokens) // self.num_paths
        device = self.gaussian_norm.map_scale.device
        for name, values in stats.items():
            mins, maxs = torch.cat(values, dim=1).to(device)
            normalizer = self.gaussian_norm if name == "gaussian" else self.perlin_norm
            normalizer.fit(maxs, mins, maxs)
        self.train(was_training)
        return count

    def prepare(self, images: torch.Tensor, chunk: int = 16) -> None:
        """The state a fit computes without training: score statistics of the (untrained) branches on ``images``."""
        size = tuple(images.shape[-2:])
        batches = (self.embed(self.backbone_features(images[i : i + chunk])) for i in range(0, len(images), chunk))
        self.fit_normalizers(batches, size)

    def forward(self, images: torch.Tensor) -> torch.Tensor | InferenceBatch:
        """Training mode: adapted tokens ``(P·B, N, D)``. Eval mode: :class:`InferenceBatch`."""
        tokens = self.embed(self.backbone_features(images))
        if self.training:
            return tokens
        score, anomaly_map = self.fuse(self.branch_maps(tokens, images.shape[-2:]))
        return InferenceBatch(pred_score=self.image_score(score, anomaly_map), anomaly_map=anomaly_map)
