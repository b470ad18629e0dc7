"""FDSL torch model: feature discrepancy (FD) against k-shot memory banks, learned scoring (ASL), NAM and LFE.

Everything the model needs at inference is a registered buffer (memory banks, positional embeddings, the
stitching kernel), and the graph is static for a fixed k: nearest-neighbour search is MatMul → ArgMax →
Gather, windows are tensor unfolds, overlap averaging is one transposed convolution with a one-hot kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch
from anomalib.models.components import DynamicBufferMixin
from torch import nn

from anomalib_fewshot.components.lifecycle.arguments import check_arguments
from anomalib_fewshot.components.nn.scoring import ImageScore, ImageScoreRule
from anomalib_fewshot.components.nn.tokens import ClipTokens, CnnTokens, TokenExtractor
from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.models.fdsl.windows import WindowGrid

Alignment = Literal["cosine", "l2"]
ScoreMode = Literal["mean", "score", "map_max"]


class ScoreHead(nn.Module):
    """FDSL's per-level token classifier: ``[BN] → (Linear → BN → ReLU)×n → Linear(·, 2) → softmax``.

    Args:
        in_dim: token width of the level (1024 for ViT-L).
        hidden_dims: widths of the hidden layers (512, 128, 32).
        first_batch_norm: batch-normalise the input residuals first (``useFirstBatchNorm``).

    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int] = (512, 128, 32), first_batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(in_dim)] if first_batch_norm else []
        width = in_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            width = hidden
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, residuals: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, L, 2)`` (normal, anomalous) of residual tokens ``(B, L, C)``."""
        batch, length, channels = residuals.shape
        logits = self.net(residuals.reshape(batch * length, channels))
        return logits.softmax(dim=-1).reshape(batch, length, 2)


class NeighborAggregation(nn.Module):
    """NAM: ``Conv2d(2, 6, 5) → ReLU → Conv2d(6, 2, 5) → softmax`` over a 2-channel probability map."""

    def __init__(self, hidden: int = 6, kernel_size: int = 5) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.net = nn.Sequential(
            nn.Conv2d(2, hidden, kernel_size, padding=padding),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 2, kernel_size, padding=padding),
        )

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Refined probabilities ``(B, 2, g, g)``."""
        return self.net(probabilities).softmax(dim=1)


def nearest_residuals(
    queries: torch.Tensor,
    bank: torch.Tensor,
    align: str = "cosine",
    absolute: bool = True,
    chunk: int = 4096,
) -> torch.Tensor:
    """Residual ``|f − nn(f)|`` of every query token against its nearest memory token.

    Args:
        queries: ``(B, L, C)`` tokens.
        bank: ``(N, C)`` memory tokens shared by the batch, or ``(B, N, C)``: one candidate set per image (the
            image-index window memory).
        align: ``"cosine"`` (the code's ``mulmax``: maximum dot product of L2-normalised tokens) or ``"l2"``
            (``diff2``: minimum Euclidean distance).
        absolute: absolute value of the residual (``useAbs``).
        chunk: queries per similarity block (bounds the ``chunk × N`` similarity matrix); a fixed, static split.

    """
    per_image = bank.dim() == 3
    bank_t = bank.transpose(-1, -2)
    half_norms = 0.5 * bank.pow(2).sum(-1) if align == "l2" else None
    residuals = []
    for part in queries.split(chunk, dim=1):
        similarity = part @ bank_t
        if half_norms is not None:  # argmax of q·m − |m|²/2 = argmin |q − m|
            similarity = similarity - (half_norms[:, None] if per_image else half_norms)
        index = similarity.argmax(dim=-1)
        if per_image:  # rows of the flattened banks (GatherElements on a broadcast index: reference kernels, 15 ms)
            offsets = torch.arange(bank.shape[0], device=index.device)[:, None] * bank.shape[1]
            flat = bank.reshape(-1, bank.shape[-1])
            nearest = flat[(index + offsets).reshape(-1)].reshape(*index.shape, bank.shape[-1])
        else:
            nearest = bank[index]
        residuals.append(part - nearest)
    residual = torch.cat(residuals, dim=1) if len(residuals) > 1 else residuals[0]
    return residual.abs() if absolute else residual


def is_clip_backbone(name: str) -> bool:
    """open_clip vision transformers are named ``ViT-…`` (timm/torchvision CNNs are lower case)."""
    return name.startswith("ViT-")


class FdslModel(DynamicBufferMixin, nn.Module):
    """FDSL: nearest-neighbour residuals to k-shot banks, scored by learned per-level heads and the NAM.

    The banks hold a k-dependent number of tokens: :class:`DynamicBufferMixin` takes a checkpoint's bank shapes
    when it is loaded.

    Args:
        backbone: open_clip model name (``"ViT-L-14-336"``) for the paper's ViT, or a timm/torchvision CNN name
            (``"tf_efficientnet_lite0"``) for the offline profiles.
        layers: ViT block numbers (6, 12, 18, 24) or CNN feature modules (``["blocks.2", "blocks.4"]``).
        pre_trained: load the backbone's pretrained weights when fitting starts.
        weights_path: local backbone weights file.
        vision_cfg: custom open_clip vision-tower config (see :class:`ClipTokens`).
        image_size: square input size of the global branch (518 for ViT-L/14; a multiple of the grid cell).
        head_dims: hidden widths of the per-level heads.
        first_batch_norm: batch-normalise residuals before the head.
        nam: use the NAM (``useNAM``); without it the heads' raw maps are used.
        lfe: add the local-enhanced (window) branch.
        window_size: LFE window in grid cells (13 = 182 px for ViT-L/14).
        window_stride: LFE window stride in grid cells (2 = 28 px).
        lfe_weight: weight of the window branch in the fusion (``win-weight`` 0.5).
        align: ``"cosine"`` or ``"l2"`` nearest-neighbour alignment.
        absolute: absolute residuals.
        score_mode: image score: ``"mean"`` = ½·(branch score + max of the final map) (the code's evaluation score
            without its test-set min–max), ``"score"`` = the branch score (mean over levels of each map's max,
            fused like the maps), ``"map_max"`` = max of the final map.
        match_chunk: query tokens per similarity block in the nearest-neighbour search.
        quick_gelu: QuickGELU in a CLIP backbone (OpenAI weights).
        window_index: the image-index window memory (the code's ``useImgIdx``, off in its scripts): each test
            window's pooled image embedding (CLIP: the projected CLS; CNN: the pooled last level) picks its most
            similar reference window, and the window tokens are matched against the union of the picked windows
            (a fixed ``n²·w²`` tokens per image whatever k is) instead of the whole window bank.
        window_match: with ``window_index``, what a test window's tokens are matched against: ``"union"`` (the
            code: the union of the windows every window of the image picked) or ``"own"`` (only the ``w²`` tokens of
            the reference window it picked itself; ``n²`` times less matching).
        nam_combine: how the final map uses the NAM at inference: ``"replace"`` (the code: the NAM's refined map)
            or ``"max"`` (per cell, the larger anomalous probability of the head's raw map and the refined one, so
            the NAM can widen a response but not erase it). Training is the same in both.
        window_features: where the LFE window tokens come from: ``"encode"`` (the method: every window crop runs
            through the backbone on its own) or ``"crop"`` (cut from the global branch's feature maps: one backbone
            pass per image; a window's embedding for ``window_index`` is the mean of its deepest-level cells). An
            approximation for speed: the crops see no context beyond their borders, the cut maps do.
        image_score: the image score shipped (:class:`~anomalib_fewshot.components.nn.scoring.ImageScore`):
            ``"model"`` (the method's own, default), or from the map: ``"max"``, ``"top1"``, ``"resid"``, ``"z"``.

    """

    def __init__(
        self,
        backbone: str = "ViT-L-14-336",
        layers: Sequence[int | str] = (6, 12, 18, 24),
        pre_trained: bool = True,
        weights_path: str | None = None,
        vision_cfg: dict[str, Any] | None = None,
        image_size: int = 518,
        head_dims: Sequence[int] = (512, 128, 32),
        first_batch_norm: bool = True,
        nam: bool = True,
        lfe: bool = True,
        window_size: int = 13,
        window_stride: int = 2,
        lfe_weight: float = 0.5,
        align: Literal["cosine", "l2"] = "cosine",
        absolute: bool = True,
        score_mode: Literal["mean", "score", "map_max"] = "mean",
        match_chunk: int = 4096,
        quick_gelu: bool = True,
        window_index: bool = False,
        window_match: Literal["union", "own"] = "union",
        nam_combine: Literal["replace", "max"] = "replace",
        window_features: Literal["encode", "crop"] = "encode",
        image_score: ImageScoreRule = "model",
    ) -> None:
        super().__init__()
        check_arguments(FdslModel.__init__, locals(), unit_interval=("lfe_weight",))
        self.image_score = ImageScore(image_score)
        self.image_size = int(image_size)
        self.window_index = bool(window_index) and bool(lfe)
        self.window_match = window_match
        self.window_features = window_features
        self.features = self._build_features(
            backbone,
            layers,
            pre_trained,
            weights_path,
            vision_cfg,
            image_size,
            window_size,
            quick_gelu,
            self.window_index,
        )
        self.grid = self.image_size // self.features.patch
        self.lfe = bool(lfe)
        self.window_size = int(window_size)
        self.window_stride = int(window_stride)
        # window geometry is only checked (and its buffers built) when the LFE branch is on
        self.windows = WindowGrid(self.grid, window_size, window_stride, self.features.patch) if self.lfe else None
        self.lfe_weight = float(lfe_weight) if self.lfe else 0.0
        self.align = align
        self.absolute = absolute
        self.score_mode = score_mode
        self.match_chunk = int(match_chunk)
        self.use_nam = bool(nam)
        self.nam_combine = nam_combine
        self.heads = nn.ModuleList(ScoreHead(c, head_dims, first_batch_norm) for c in self.features.channels)
        self.nam = NeighborAggregation() if nam else None
        for index, channels in enumerate(self.features.channels):
            self.register_buffer(f"bank_{index}", torch.zeros(0, channels))
            self.register_buffer(f"window_bank_{index}", torch.zeros(0, channels))
        # pooled embeddings of the reference windows (image-index window memory), (k·n², D)
        self.register_buffer("window_embeddings", torch.zeros(0))
        self.register_buffer("banks_ready", torch.tensor(False))

    @staticmethod
    def _build_features(
        backbone: str,
        layers: Sequence[int | str],
        pre_trained: bool,
        weights_path: str | None,
        vision_cfg: dict[str, Any] | None,
        image_size: int,
        window_size: int,
        quick_gelu: bool,
        embedding: bool = False,
    ) -> TokenExtractor:
        if vision_cfg is not None or is_clip_backbone(backbone):
            if vision_cfg is not None:
                patch = int(vision_cfg.get("patch_size", 16))
            else:
                import open_clip

                config = open_clip.get_model_config(backbone) or {}
                patch = int(config.get("vision_cfg", {}).get("patch_size", 14))
            return ClipTokens(
                name=backbone,
                layers=[int(layer) for layer in layers],
                image_size=image_size,
                window_size=window_size * patch,
                pre_trained=pre_trained,
                weights_path=weights_path,
                vision_cfg=vision_cfg,
                quick_gelu=quick_gelu,
                embedding=embedding,
            )
        return CnnTokens(backbone, [str(layer) for layer in layers], image_size, pre_trained, weights_path)

    # ------------------------------------------------------------------ banks
    @property
    def num_levels(self) -> int:
        """Number of feature levels (heads)."""
        return len(self.heads)

    def banks(self, window: bool = False) -> list[torch.Tensor]:
        """The global (or window) memory bank of each level."""
        prefix = "window_bank" if window else "bank"
        return [getattr(self, f"{prefix}_{index}") for index in range(self.num_levels)]

    def banks_without_shot(self, shot: int, shots: int) -> list[torch.Tensor]:
        """The global banks without the tokens of shot ``shot`` of ``shots`` (the full banks when ``shots`` is 1).

        The global banks hold the shots' tokens in shot order, the same number per shot (:meth:`set_banks`).
        """
        banks = self.banks()
        if shots < 2:
            return banks
        if not 0 <= shot < shots or banks[0].shape[0] % shots:
            msg = f"shot {shot} of {shots}: the banks hold {banks[0].shape[0]} tokens, not a whole number per shot"
            raise InvalidArgumentError(msg)
        per_shot = banks[0].shape[0] // shots
        return [torch.cat([b[: shot * per_shot], b[(shot + 1) * per_shot :]]) for b in banks]

    def level_tokens(self, images: torch.Tensor, window: bool = False) -> list[torch.Tensor]:
        """L2-normalised tokens ``(B, L, C)`` per level of ``[0, 1]`` images (windows: ``B·n_windows`` images)."""
        return self.map_tokens(self.feature_maps(images, window))

    def feature_maps(self, images: torch.Tensor, window: bool = False) -> list[torch.Tensor]:
        """Feature maps ``(B, C, g, g)`` per level of ``[0, 1]`` images, on the token grid."""
        return self.features(self.features.normalize(images), window=window)

    @staticmethod
    def map_tokens(maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """L2-normalised tokens ``(B, g², C)`` of feature maps ``(B, C, g, g)``."""
        return [F.normalize(m.flatten(2).transpose(1, 2), dim=-1) for m in maps]

    @property
    def windows_per_side(self) -> int:
        """LFE window positions per side (0 without the LFE branch)."""
        return 0 if self.windows is None else self.windows.per_side

    def extract_windows(self, images: torch.Tensor) -> torch.Tensor:
        """``(B·n², 3, w, w)`` LFE windows of ``(B, 3, S, S)`` images, row-major over window positions."""
        return self._window_grid().cut(images)

    def _window_grid(self) -> WindowGrid:
        if self.windows is None:
            msg = "this FDSL model has no LFE branch (lfe=False): it has no windows"
            raise InvalidArgumentError(msg)
        return self.windows

    def window_tokens(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Window tokens per level as ``(B, n²·w², C)`` (window-major, then row-major inside the window)."""
        return self.embedded_window_tokens(images)[0]

    def embedded_window_tokens(
        self, images: torch.Tensor, maps: Sequence[torch.Tensor] | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """:meth:`window_tokens` and, with ``window_index``, the windows' L2-normalised embeddings ``(B, n², D)``.

        With ``window_features="crop"`` they are cut from the global feature ``maps`` (computed when not given).
        """
        if self.window_features == "crop":
            return self.cropped_window_tokens(self.feature_maps(images) if maps is None else maps)
        windows = self.features.normalize(self.extract_windows(images))
        if self.window_index:
            window_maps, embedded = self.features.forward_embedded(windows, window=True)
            embedded = F.normalize(embedded, dim=-1).reshape(images.shape[0], -1, embedded.shape[-1])
        else:
            window_maps, embedded = self.features(windows, window=True), None
        tokens = self.map_tokens(window_maps)
        return [t.reshape(images.shape[0], -1, t.shape[-1]) for t in tokens], embedded

    def cropped_window_tokens(self, maps: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Window tokens ``(B, n²·w², C)`` per level cut from global feature maps, and the windows' embeddings."""
        grid = self._window_grid()
        tokens = [F.normalize(grid.cut_cells(level), dim=-1) for level in maps]
        embedded = F.normalize(grid.pool_cells(maps[-1]), dim=-1) if self.window_index else None
        return tokens, embedded

    def window_candidates(self, embedded: torch.Tensor) -> list[torch.Tensor]:
        """Per level, each image's candidate tokens ``(B, n²·w², C)``: the reference windows its windows pick.

        ``embedded`` are the test windows' embeddings ``(B, n², D)``; every window picks the reference window of
        highest cosine similarity (``MatMul → ArgMax``), and the picked windows' tokens are gathered from the
        window bank, kept as ``(k·n², w², C)``.
        """
        return [windows.flatten(1, 2) for windows in self.picked_windows(embedded)]

    def picked_windows(self, embedded: torch.Tensor) -> list[torch.Tensor]:
        """Per level, the tokens ``(B, n², w², C)`` of the reference window each test window picks.

        ``embedded`` are the test windows' embeddings ``(B, n², D)``; a window picks the reference window of highest
        cosine similarity (``MatMul → ArgMax → Gather``).
        """
        picked = (embedded @ self.window_embeddings.t()).argmax(dim=-1)  # (B, n²)
        area = self.window_size**2
        return [bank.reshape(-1, area, bank.shape[-1])[picked] for bank in self.banks(window=True)]

    def window_residuals(self, tokens: Sequence[torch.Tensor], embedded: torch.Tensor | None) -> list[torch.Tensor]:
        """Per-level residuals ``(B, n²·w², C)`` of window tokens (``embedded``: their windows' embeddings or None).

        Against the whole window bank (no ``window_index``), the union of the picked windows (``"union"``) or each
        window's own picked window (``"own"``).
        """
        if embedded is None:
            return self.residuals(tokens, self.banks(window=True))
        if self.window_match == "union":
            return self.residuals(tokens, self.window_candidates(embedded))
        residuals = []
        for level_tokens, windows in zip(tokens, self.picked_windows(embedded), strict=True):
            batch, count, area, channels = windows.shape
            queries = level_tokens.reshape(batch * count, area, channels)
            bank = windows.reshape(batch * count, area, channels)
            residual = nearest_residuals(queries, bank, self.align, self.absolute, self.match_chunk)
            residuals.append(residual.reshape(batch, count * area, channels))
        return residuals

    @torch.no_grad()
    def set_banks(self, images: torch.Tensor, chunk: int = 4) -> None:
        """Fill the memory banks from the k reference images ``(k, 3, S, S)`` in ``[0, 1]`` (one draw, both banks)."""
        global_parts: list[list[torch.Tensor]] = [[] for _ in range(self.num_levels)]
        window_parts: list[list[torch.Tensor]] = [[] for _ in range(self.num_levels)]
        embedding_parts: list[torch.Tensor] = []
        for start in range(0, len(images), chunk):
            batch = images[start : start + chunk]
            maps = self.feature_maps(batch)
            for level, tokens in enumerate(self.map_tokens(maps)):
                global_parts[level].append(tokens.reshape(-1, tokens.shape[-1]))
            if self.lfe:
                window_tokens, embedded = self.embedded_window_tokens(batch, maps)
                for level, tokens in enumerate(window_tokens):
                    window_parts[level].append(tokens.reshape(-1, tokens.shape[-1]))
                if embedded is not None:
                    embedding_parts.append(embedded.reshape(-1, embedded.shape[-1]))
        for level in range(self.num_levels):
            setattr(self, f"bank_{level}", torch.cat(global_parts[level]))
            if self.lfe:
                setattr(self, f"window_bank_{level}", torch.cat(window_parts[level]))
        if embedding_parts:
            self.window_embeddings = torch.cat(embedding_parts)
        self.banks_ready.fill_(True)

    def prepare(self, images: torch.Tensor) -> None:
        """The state a fit computes without training: both memory banks from ``images`` (see :meth:`set_banks`)."""
        self.set_banks(images)

    # ------------------------------------------------------------------ scoring
    def residuals(self, tokens: Sequence[torch.Tensor], banks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per-level residuals of ``(B, L, C)`` tokens against ``(N, C)`` banks."""
        return [
            nearest_residuals(t, b, self.align, self.absolute, self.match_chunk)
            for t, b in zip(tokens, banks, strict=True)
        ]

    def head_maps(self, residuals: Sequence[torch.Tensor], grid: int) -> list[torch.Tensor]:
        """Raw head probabilities per level as ``(B, 2, grid, grid)`` maps of ``(B, grid², C)`` residuals."""
        return [
            head(r).transpose(1, 2).reshape(r.shape[0], 2, grid, grid)
            for head, r in zip(self.heads, residuals, strict=True)
        ]

    def refine(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Apply the NAM (identity without it)."""
        return probabilities if self.nam is None else self.nam(probabilities)

    def final_anomalous(self, raw: torch.Tensor, refined: torch.Tensor) -> torch.Tensor:
        """The anomalous channel ``(B, g, g)`` the model reports for one level (``nam_combine``)."""
        if self.nam_combine == "max":
            return torch.maximum(raw[:, 1], refined[:, 1])
        return refined[:, 1]

    def global_level_maps(
        self,
        images: torch.Tensor,
        banks: Sequence[torch.Tensor] | None = None,
        tokens: Sequence[torch.Tensor] | None = None,
    ) -> list[tuple]:
        """``(raw, refined)`` 2-channel maps per level of the global branch (training uses both).

        ``tokens``: the images' :meth:`level_tokens` when already computed.
        """
        tokens = self.level_tokens(images) if tokens is None else tokens
        raw = self.head_maps(self.residuals(tokens, self.banks() if banks is None else banks), self.grid)
        return [(r, self.refine(r)) for r in raw]

    def stitch(self, window_probabilities: torch.Tensor) -> torch.Tensor:
        """Average overlapping window probabilities ``(B, n²·w², 2)`` into a ``(B, 2, g, g)`` map."""
        return self._window_grid().stitch(window_probabilities)

    def window_level_maps(
        self, images: torch.Tensor, maps: Sequence[torch.Tensor] | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(raw, refined)`` 2-channel maps per level of the LFE branch (heads per token, stitched; then the NAM).

        ``maps``: the images' global :meth:`feature_maps` when already computed (used by ``window_features="crop"``).
        """
        tokens, embedded = self.embedded_window_tokens(images, maps)
        levels = []
        for head, residual in zip(self.heads, self.window_residuals(tokens, embedded), strict=True):
            raw = self.stitch(head(residual))
            levels.append((raw, self.refine(raw)))
        return levels

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Anomaly maps (``image_size``², bilinear from the grid) and image scores of ``[0, 1]`` images."""
        features = self.feature_maps(images)
        levels = self.global_level_maps(images, tokens=self.map_tokens(features))
        global_maps = torch.stack([self.final_anomalous(*maps) for maps in levels], dim=1)
        anomaly_grid = global_maps.mean(1)
        score = global_maps.flatten(2).amax(-1).mean(1)
        if self.lfe:
            windows = self.window_level_maps(images, features)
            window_maps = torch.stack([self.final_anomalous(*maps) for maps in windows], dim=1)
            anomaly_grid = (1 - self.lfe_weight) * anomaly_grid + self.lfe_weight * window_maps.mean(1)
            score = (1 - self.lfe_weight) * score + self.lfe_weight * window_maps.flatten(2).amax(-1).mean(1)
        map_max = anomaly_grid.flatten(1).amax(-1)
        if self.score_mode == "mean":
            score = 0.5 * (score + map_max)
        elif self.score_mode == "map_max":
            score = map_max
        anomaly_map = F.interpolate(anomaly_grid[:, None], size=images.shape[-2:], mode="bilinear", align_corners=True)
        return InferenceBatch(pred_score=self.image_score(score, anomaly_map), anomaly_map=anomaly_map)

    # ------------------------------------------------------------------ head weights
    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """The learned part (heads and NAM) as a plain state dict."""
        state = {f"heads.{k}": v for k, v in self.heads.state_dict().items()}
        if self.nam is not None:
            state.update({f"nam.{k}": v for k, v in self.nam.state_dict().items()})
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    def head_signature(self) -> dict[str, Any]:
        """What a head-weights file must match: the level widths, hidden widths and NAM."""
        dims = [m.out_features for m in self.heads[0].net if isinstance(m, nn.Linear)][:-1]
        return {"channels": list(self.features.channels), "head_dims": dims, "nam": self.use_nam}
