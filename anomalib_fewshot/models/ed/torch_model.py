"""ED torch model: frozen backbone, per-level reconstruction transformers with Gaussian-prior attention targets.

Pure torch (no Lightning). The reference features are registered buffers, the attention distance grids are
computed in code, the FFN median is an exact top-k lower median, and the eval forward scores every image on its
own (no reduction over the batch), so it exports to ONNX/OpenVINO and is batch-size invariant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_fewshot.components.lifecycle.arguments import check_arguments
from anomalib_fewshot.components.nn.backbones import Backbone
from anomalib_fewshot.components.nn.scoring import GaussianSmoothing, ImageScore, ImageScoreRule
from anomalib_fewshot.errors import InvalidArgumentError

Fusion = Literal["d2fusion", "difference"]
FfnKind = Literal["median_dwconv", "mlp"]
AnomalyMap = Literal["rec_x_inter", "rec"]
TokenScale = Literal["none", "rms"]


def lower_median(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.median(x, dim).values`` (the lower median for even sizes) as a top-k, which exports to ONNX.

    The median is the largest of the ``k`` smallest values, so they are selected unsorted and reduced by a maximum:
    the same value without asking for a sort (OpenVINO, f32, one thread: never slower in ``research.speed_micro``,
    sometimes faster; ED lite's four median nodes 26.3 → 20.9 ms in one profile each, docs/benchmarks/speed).
    """
    k = (x.shape[dim] - 1) // 2 + 1
    return torch.topk(x, k, dim=dim, largest=False, sorted=False).values.amax(dim)


def sincos_position_embedding(height: int, width: int, dim: int, base: float = 1e4) -> torch.Tensor:
    """Fixed 2-D sin/cos embedding ``(H·W, dim)``: the first ``dim/2`` channels encode x, the rest y."""
    if dim % 4:
        msg = f"the embedding dimension must be divisible by 4 for a 2-D sin/cos embedding, got {dim}"
        raise InvalidArgumentError(msg)
    quarter = dim // 4
    omega = 1.0 / base ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")  # fmt: skip
    x_angles = xs.flatten()[:, None] * omega[None]
    y_angles = ys.flatten()[:, None] * omega[None]
    return torch.cat([x_angles.sin(), x_angles.cos(), y_angles.sin(), y_angles.cos()], dim=1).float()


def squared_grid_distances(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances from every grid position to every row and to every column.

    Returns ``(Δy² (H·W, H), Δx² (H·W, W))``: the full pairwise ``(H·W, H·W)`` matrices of the reference code
    are their broadcast sums, ``Δy²[i, j // W] + Δx²[i, j % W]``.
    """
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")  # fmt: skip
    ys, xs = ys.flatten(), xs.flatten()
    rows, cols = torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32)
    return (ys[:, None] - rows[None]) ** 2, (xs[:, None] - cols[None]) ** 2


class PriorAttention(nn.Module):
    """Multi-head attention that also predicts a Gaussian-prior target correlation per query (FOD/ED).

    Returns the concatenated heads (the reference code computes an output projection and discards it; it is
    not built here), the softmax attention ``(B, h, L, L)`` and the row-normalised target
    ``T ∝ exp(−Δy²/2σ₁² − Δx²/2σ₂²)/(2πσ₁σ₂)`` with ``σ = 3^(sigmoid(5s)+1e-5) − 1`` from a linear map of the query.
    The Gaussian factorises over key rows and columns and the ``1/(2πσ₁σ₂)`` factor cancels in the row
    normalisation, so ``T`` is built as an outer product of a row and a column profile: the same values with
    ``H·W·(H+W)`` instead of ``(H·W)²`` exponentials. The attention scale is learnable (ED), initialised to
    ``1/sqrt(d/h)``.
    """

    def __init__(self, dim: int, num_heads: int, grid: tuple[int, int]) -> None:
        super().__init__()
        if dim % num_heads:
            msg = f"d_model {dim} is not divisible by num_heads={num_heads}"
            raise InvalidArgumentError(msg)
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.sigma = nn.Linear(dim, 2 * num_heads)
        self.scale = nn.Parameter(torch.tensor(1.0 / math.sqrt(dim / num_heads)))
        dist_y, dist_x = squared_grid_distances(*grid)
        self.register_buffer("dist_y", dist_y, persistent=False)
        self.register_buffer("dist_x", dist_x, persistent=False)
        self.grid = grid

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` ``(B, L, d)`` attends to ``context`` ``(B, L, d)``: ``(out, attention, target)``."""
        batch, length, dim = x.shape
        heads = self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, -1, heads, dim // heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(context)), split(self.value(context))
        attention = torch.softmax(self.scale * q @ k.transpose(-1, -2), dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(batch, length, dim)
        sigma = torch.sigmoid(5.0 * self.sigma(x)) + 1e-5
        sigma = (torch.pow(3.0, sigma) - 1.0).reshape(batch, length, 2, heads).permute(0, 3, 1, 2)  # (B, h, L, 2)
        sigma_y, sigma_x = sigma[..., 0:1], sigma[..., 1:2]
        rows = torch.exp(-self.dist_y / (2 * sigma_y**2))  # (B, h, L, H)
        cols = torch.exp(-self.dist_x / (2 * sigma_x**2))  # (B, h, L, W)
        rows = rows / rows.sum(-1, keepdim=True)
        cols = cols / cols.sum(-1, keepdim=True)
        target = (rows.unsqueeze(-1) * cols.unsqueeze(-2)).reshape(batch, heads, length, length)
        return out, attention, target


class MedianFeedForward(nn.Module):
    """ED's FFN: ``fc1 → depthwise 3×3 over the token grid → GELU → x + s ⊙ median_tokens(x) → fc2``.

    ``kind="mlp"`` is FOD's plain ``fc1 → GELU → fc2`` (ablation).
    """

    def __init__(self, dim: int, ratio: int, grid: tuple[int, int], dropout: float, kind: FfnKind) -> None:
        super().__init__()
        check_arguments(MedianFeedForward.__init__, locals())
        hidden = dim * ratio
        self.kind = kind
        self.grid = grid
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        if kind == "median_dwconv":
            self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
            self.scaling = nn.Parameter(torch.ones(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, d)`` → ``(B, L, d)``."""
        x = self.fc1(x)
        if self.kind == "median_dwconv":
            batch, _, channels = x.shape
            grid = x.transpose(1, 2).reshape(batch, channels, *self.grid)
            x = self.dwconv(grid).flatten(2).transpose(1, 2)
            x = F.gelu(x)
            x = x + self.scaling * lower_median(x, dim=1).unsqueeze(1)
        else:
            x = F.gelu(x)
        return self.fc2(self.dropout(x))


class EncoderLayer(nn.Module):
    """Self-attention (intra-image) and cross-attention to the reference (inter-image), fused, then the FFN."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid: tuple[int, int],
        ffn_ratio: int,
        dropout: float,
        fusion: Fusion,
        ffn: FfnKind,
    ) -> None:
        super().__init__()
        check_arguments(EncoderLayer.__init__, locals())
        self.intra = PriorAttention(dim, num_heads, grid)
        self.inter = PriorAttention(dim, num_heads, grid)
        self.fusion_kind = fusion
        if fusion == "d2fusion":
            self.fusion = nn.Sequential(nn.Linear(2 * dim, 4 * dim), nn.ReLU(inplace=True), nn.Linear(4 * dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = MedianFeedForward(dim, ffn_ratio, grid, dropout, ffn)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x``, ``ref`` ``(B, L, d)`` → new ``x`` and ``[intra attn, intra target, inter attn, inter target]``."""
        out, intra_attn, intra_target = self.intra(x, x)
        new_x = x + self.dropout(out)
        out, inter_attn, inter_target = self.inter(x, ref)
        ref_x = x + self.dropout(out)
        if self.fusion_kind == "d2fusion":
            fused = self.fusion(torch.cat([new_x, ref_x], dim=-1))
        else:
            fused = new_x - ref_x  # FOD
        x = self.norm1(fused)
        return self.norm2(x + self.ffn(x)), [intra_attn, intra_target, inter_attn, inter_target]


class LevelTransformer(nn.Module):
    """One level's reconstruction transformer: embeddings, encoder layers, final norm and projection to C."""

    def __init__(
        self,
        in_channels: int,
        dim: int,
        num_heads: int,
        num_layers: int,
        grid: tuple[int, int],
        ffn_ratio: int = 4,
        dropout: float = 0.0,
        fusion: Fusion = "d2fusion",
        ffn: FfnKind = "median_dwconv",
    ) -> None:
        super().__init__()
        self.embedding = nn.Linear(in_channels, dim)
        self.ref_embedding = nn.Linear(in_channels, dim)
        for layer in (self.embedding, self.ref_embedding):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.register_buffer("position", sincos_position_embedding(*grid, dim), persistent=False)
        self.layers = nn.ModuleList(
            [EncoderLayer(dim, num_heads, grid, ffn_ratio, dropout, fusion, ffn) for _ in range(num_layers)]
        )
        self.norm = nn.LayerNorm(dim)
        self.projection = nn.Linear(dim, in_channels)

    def forward(self, tokens: torch.Tensor, ref_tokens: torch.Tensor) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """``tokens`` ``(B, L, C)``, ``ref_tokens`` ``(L, C)`` → reconstruction ``(B, L, C)`` and attention maps."""
        x = self.embedding(tokens) + self.position
        ref = (self.ref_embedding(ref_tokens) + self.position).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        maps = []
        for layer in self.layers:
            x, layer_maps = layer(x, ref)
            maps.append(layer_maps)
        return self.projection(self.norm(x)), maps


def symmetric_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-4, one_log: bool = False) -> torch.Tensor:
    """``KL(p‖q) + KL(q‖p)`` over the last axis with the reference code's ``log(· + 1e-4)``: shape ``p[..., 0]``.

    ``one_log``: the same sum as ``Σ (p − q) · log((p + ε) / (q + ε))``, one logarithm instead of two; the
    inference map uses it (OpenVINO's CPU plugin runs ``Log`` on its generic reference kernel: ED lite's ``Log``
    nodes 25.3 → 12.7 ms per image, f32, one thread, docs/benchmarks/speed; equal within 5e-7 relative). The
    training loss keeps the reference form: rounding differences there would compound over a fit.
    """
    if one_log:
        return ((p - q) * torch.log((p + eps) / (q + eps))).sum(-1)
    log_p, log_q = torch.log(p + eps), torch.log(q + eps)
    return (p * (log_p - log_q)).sum(-1) + (q * (log_q - log_p)).sum(-1)


def reconstruction_score(tokens: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Per token ``mean_c (x − x̂)² + 1 − cos(x, x̂)``: ``(B, L)``."""
    return (tokens - reconstruction).pow(2).mean(-1) + 1.0 - F.cosine_similarity(tokens, reconstruction, dim=-1)


class EdModel(nn.Module):
    """ED (Emphasize Differences) on the FOD design.

    Pooled backbone tokens are reconstructed by transformers whose cross-attention to per-position reference
    features must match a learned Gaussian prior.

    Input: ``(B, 3, S, S)`` RGB in ``[0, 1]`` (already resized); normalised with the backbone's statistics.
    Eval output: :class:`~anomalib.data.InferenceBatch`; the map is, per level, reconstruction score ×
    inter-correlation score, up-sampled and averaged over levels, then smoothed (σ=4); image score = max.

    Args:
        backbone: backbone name (``"wide_resnet50_2.racm_in1k"``: timm's default WRN-50 weights, as the code).
        layers: feature levels (``layer2``, ``layer3``).
        pre_trained: load ImageNet weights when fitting starts.
        weights_path: local backbone weights file.
        image_size: square input size (fixes the token grids).
        d_models: transformer width per level (256, 512).
        num_heads: attention heads (8).
        num_layers: encoder layers per level (3).
        ffn_ratio: FFN expansion (4).
        dropout: dropout (0).
        fusion: ``"d2fusion"`` (ED) or ``"difference"`` (FOD's ``new − ref``).
        ffn: ``"median_dwconv"`` (ED) or ``"mlp"`` (FOD).
        smoothing_sigma: Gaussian smoothing of the map.
        token_scale: ``"none"`` (the reference code) or ``"rms"``: divide each level's tokens by their root mean
            square over the training images (a fitted scalar buffer; not in the original, see the README).
        anomaly_map: ``"rec_x_inter"`` (ED: reconstruction error × inter-correlation factor) or ``"rec"``
            (reconstruction error alone; an ablation switch, see the README's magnetic-tile diagnosis).
        inter_exponent: ``γ`` of ``rec × inter^γ`` (``"rec_x_inter"`` only; inference only): ``1`` = ED's map,
            ``0`` = the reconstruction error alone; values between keep both factors with less weight on the
            inter-correlation factor.
        image_score: the image score shipped (:class:`~anomalib_fewshot.components.nn.scoring.ImageScore`):
            ``"model"`` (the method's own, default), or from the map: ``"max"``, ``"top1"``, ``"resid"``, ``"z"``.

    """

    def __init__(
        self,
        backbone: str = "wide_resnet50_2.racm_in1k",
        layers: Sequence[str] = ("layer2", "layer3"),
        pre_trained: bool = True,
        weights_path: str | None = None,
        image_size: int = 256,
        d_models: Sequence[int] = (256, 512),
        num_heads: int = 8,
        num_layers: int = 3,
        ffn_ratio: int = 4,
        dropout: float = 0.0,
        fusion: Fusion = "d2fusion",
        ffn: FfnKind = "median_dwconv",
        smoothing_sigma: float = 4.0,
        token_scale: TokenScale = "none",
        anomaly_map: AnomalyMap = "rec_x_inter",
        inter_exponent: float = 1.0,
        image_score: ImageScoreRule = "model",
    ) -> None:
        super().__init__()
        check_arguments(EdModel.__init__, locals(), unit_interval=("inter_exponent",))
        self.image_score = ImageScore(image_score)
        self.token_scale = token_scale
        self.anomaly_map = anomaly_map
        self.inter_exponent = float(inter_exponent)
        if len(d_models) != len(layers):
            msg = f"d_models needs one width per layer: {len(layers)} layers, got {list(d_models)}"
            raise InvalidArgumentError(msg)
        self.backbone = Backbone(backbone, layers, pre_trained=pre_trained, weights_path=weights_path)
        with torch.no_grad():
            probe = self.backbone(torch.zeros(1, 3, image_size, image_size))
        self.grids = [tuple(f.shape[-2:]) for f in probe]
        channels = [f.shape[1] for f in probe]
        self.levels = nn.ModuleList(
            [
                LevelTransformer(c, d, num_heads, num_layers, grid, ffn_ratio, dropout, fusion, ffn)
                for c, d, grid in zip(channels, d_models, self.grids, strict=True)
            ]
        )
        for index, (c, grid) in enumerate(zip(channels, self.grids, strict=True)):
            self.register_buffer(f"reference_{index}", torch.zeros(grid[0] * grid[1], c))
            self.register_buffer(f"scale_{index}", torch.tensor(1.0))
        self.register_buffer("reference_ready", torch.tensor(False))
        self.smoothing = GaussianSmoothing(smoothing_sigma)

    def references(self) -> list[torch.Tensor]:
        """Per-level reference features ``(L, C)``."""
        return [getattr(self, f"reference_{i}") for i in range(len(self.levels))]

    def scales(self) -> list[torch.Tensor]:
        """Per-level token scale (1 unless ``token_scale="rms"``)."""
        return [getattr(self, f"scale_{i}") for i in range(len(self.levels))]

    def raw_tokens(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Frozen, 3×3-average-pooled backbone tokens per level ``(B, L, C)``, before the token scale."""
        with torch.no_grad():
            features = self.backbone(self.backbone.normalize(images))
            return [F.avg_pool2d(f, 3, stride=1, padding=1).flatten(2).transpose(1, 2) for f in features]

    def tokens(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The tokens the transformers see: :meth:`raw_tokens` divided by the fitted per-level scale."""
        return [t / scale for t, scale in zip(self.raw_tokens(images), self.scales(), strict=True)]

    @torch.no_grad()
    def set_references(self, mean_tokens: Sequence[torch.Tensor], rms: Sequence[float] | None = None) -> None:
        """Freeze the fitted state from the training images' raw tokens.

        Args:
            mean_tokens: per level, the per-position mean ``(L, C)`` of the raw training tokens (or the raw
                tokens ``(N, L, C)`` themselves, averaged here).
            rms: per level, the root mean square of the raw training tokens; used when ``token_scale="rms"``.

        """
        rms = rms if rms is not None else [None] * len(mean_tokens)
        for index, (tokens, level_rms) in enumerate(zip(mean_tokens, rms, strict=True)):
            mean = tokens.mean(0) if tokens.dim() == 3 else tokens
            if self.token_scale == "rms":
                if level_rms is None and tokens.dim() != 3:
                    msg = "token_scale='rms' needs the raw tokens (N, L, C) or their rms per level"
                    raise InvalidArgumentError(msg)
                level_rms = float(tokens.pow(2).mean().sqrt()) if level_rms is None else float(level_rms)
                getattr(self, f"scale_{index}").fill_(max(level_rms, 1e-12))
            getattr(self, f"reference_{index}").copy_(mean / getattr(self, f"scale_{index}"))
        self.reference_ready.fill_(True)

    @staticmethod
    def token_statistics() -> tuple[list[torch.Tensor], list[float]]:
        """Empty running statistics for :meth:`accumulate` (per-level float64 sums, sums of squares)."""
        return [], []

    @staticmethod
    def accumulate(statistics: tuple[list[torch.Tensor], list[float]], level_tokens: Sequence[torch.Tensor]) -> None:
        """Add a batch of raw tokens (per level ``(b, L, C)``) to the running sums of :meth:`token_statistics`."""
        sums, squares = statistics
        for level, tokens in enumerate(level_tokens):
            tokens = tokens.double()
            if len(sums) <= level:
                sums.append(torch.zeros(tokens.shape[1:], dtype=torch.float64))
                squares.append(0.0)
            sums[level] += tokens.sum(0).cpu()
            squares[level] += float(tokens.pow(2).sum())

    def set_reference_statistics(self, statistics: tuple[list[torch.Tensor], list[float]], count: int) -> None:
        """Freeze references (per-position mean) and rms scales from statistics summed over ``count`` images."""
        sums, squares = statistics
        device = self.reference_ready.device
        self.set_references(
            [(total / count).float().to(device) for total in sums],
            rms=[(square / (count * total.numel())) ** 0.5 for square, total in zip(squares, sums, strict=True)],
        )

    @torch.no_grad()
    def prepare(self, images: torch.Tensor | Sequence[torch.Tensor], chunk: int = 8) -> None:
        """The state a fit computes before training: the references and scales of ``images`` (``[0, 1]``)."""
        statistics = self.token_statistics()
        device = self.reference_ready.device
        for start in range(0, len(images), chunk):
            batch = images[start : start + chunk]
            batch = (batch if isinstance(batch, torch.Tensor) else torch.stack(list(batch))).to(device)
            self.accumulate(statistics, self.raw_tokens(batch))
        self.set_reference_statistics(statistics, len(images))

    def reconstruct(self, level_tokens: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, list[list[torch.Tensor]]]]:
        """Run every level transformer: ``[(reconstruction, attention maps per layer)]``."""
        return [
            level(tokens, reference)
            for level, tokens, reference in zip(self.levels, level_tokens, self.references(), strict=True)
        ]

    def level_score(
        self, tokens: torch.Tensor, reconstruction: torch.Tensor, maps: list[list[torch.Tensor]]
    ) -> torch.Tensor:
        """Per token ``rec × inter^γ`` score of one level ``(B, L)``, each image scored on its own.

        ``γ`` is ``inter_exponent`` (1: ED). With ``anomaly_map="rec"`` the reconstruction error alone.
        """
        if self.anomaly_map == "rec":
            return reconstruction_score(tokens, reconstruction)
        corrs = torch.stack([symmetric_kl(attn, target, one_log=True) for _, _, attn, target in maps])
        corrs = corrs.mean(0).mean(1)  # layers, then heads → (B, L)
        weights = torch.softmax(-corrs, dim=-1)
        inter = weights.amax(dim=-1, keepdim=True) - weights  # per image (the reference code: over the batch)
        if self.inter_exponent != 1.0:  # a constant of the model, not of the data: one graph per value
            inter = inter.pow(self.inter_exponent)
        return reconstruction_score(tokens, reconstruction) * inter

    def forward(self, images: torch.Tensor) -> list[tuple[torch.Tensor, list[list[torch.Tensor]]]] | InferenceBatch:
        """Training mode: tokens and per-level outputs. Eval mode: :class:`InferenceBatch`."""
        level_tokens = self.tokens(images)
        outputs = self.reconstruct(level_tokens)
        if self.training:
            return level_tokens, outputs
        size = images.shape[-2:]
        maps = []
        for tokens, (reconstruction, attention), grid in zip(level_tokens, outputs, self.grids, strict=True):
            score = self.level_score(tokens, reconstruction, attention).reshape(-1, 1, *grid)
            maps.append(F.interpolate(score, size=size, mode="bilinear", align_corners=True))
        anomaly_map = self.smoothing(torch.stack(maps).mean(0))
        score = self.image_score(anomaly_map.amax(dim=(1, 2, 3)), anomaly_map)
        return InferenceBatch(pred_score=score, anomaly_map=anomaly_map)
