"""Benchmark plots: AUROC vs k per model, and accuracy vs OpenVINO latency (PNG, next to results.csv)."""

from __future__ import annotations

import io
import statistics
from pathlib import Path

from anomalib_fewshot.components.io.atomic import atomic_write_bytes


def _groups(rows: list[dict[str, str]]) -> dict[tuple[str, str, str], dict[str, list[dict[str, str]]]]:
    """``{(model label, dataset): {k: [rows]}}`` over successful rows."""
    out: dict[tuple[str, str, str], dict[str, list[dict[str, str]]]] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        label = row["model"] + (f" ({row['variant']})" if row.get("variant") else "")
        out.setdefault((label, row["dataset"], row["model"]), {}).setdefault(row["k_shot"], []).append(row)
    return out


def _k_value(k: str, full_at: float) -> float:
    return float(k) if k.isdigit() else full_at


def _mean_std(rows: list[dict[str, str]], field: str) -> tuple[float, float] | None:
    values = [float(r[field]) for r in rows if r.get(field)]
    if not values:
        return None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _save(figure, path: Path) -> Path:
    """Write ``figure`` as a palette PNG (a plot has few colours: a third of the RGBA file's size)."""
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(colors=256)
    out = io.BytesIO()
    palette.save(out, format="png", optimize=True)
    return atomic_write_bytes(path, out.getvalue())


def _legend(axis) -> None:
    """A legend on ``axis`` when it has labelled artists (rows without metrics draw nothing to label)."""
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=7)


def write_plots(rows: list[dict[str, str]], output: Path) -> list[Path]:
    """Write ``auroc_vs_k.png`` and ``accuracy_vs_speed.png``; return the paths written (none without data)."""
    groups = _groups(rows)
    if not groups:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({dataset for _, dataset, _ in groups})
    numeric = [float(k) for per_k in groups.values() for k in per_k if k.isdigit()]
    full_at = 2 * max(numeric) if numeric else 1.0
    paths = []

    metrics = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"))
    figure, axes = plt.subplots(
        len(metrics), len(datasets), figsize=(5 * len(datasets), 3.2 * len(metrics)), squeeze=False
    )
    for column, dataset in enumerate(datasets):
        for row_index, (field, title) in enumerate(metrics):
            axis = axes[row_index][column]
            for (label, ds, _), per_k in sorted(groups.items()):
                if ds != dataset:
                    continue
                points = sorted(
                    (_k_value(k, full_at), stats) for k, rs in per_k.items() if (stats := _mean_std(rs, field))
                )
                if points:
                    xs = [x for x, _ in points]
                    axis.errorbar(
                        xs,
                        [m for _, (m, _) in points],
                        yerr=[s for _, (_, s) in points],
                        marker="o",
                        capsize=3,
                        label=label,
                    )
            axis.set_xscale("log", base=2)
            axis.set_title(f"{dataset}: {title}")
            axis.set_xlabel("k (shots; rightmost = full if present)")
            axis.grid(alpha=0.3)
    _legend(axes[0][0])
    paths.append(_save(figure, output / "auroc_vs_k.png"))
    plt.close(figure)

    figure, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    for column, dataset in enumerate(datasets):
        axis = axes[0][column]
        for (label, ds, _), per_k in sorted(groups.items()):
            if ds != dataset:
                continue
            all_rows = [r for rs in per_k.values() for r in rs]
            speed, accuracy = _mean_std(all_rows, "openvino_ms"), _mean_std(all_rows, "image_auroc")
            if speed and accuracy:
                axis.scatter([speed[0]], [accuracy[0]], label=label)
        axis.set_xscale("log")
        axis.set_xlabel("OpenVINO f32 ms / image (batch 1)")
        axis.set_ylabel("image AUROC (mean over k and seeds)")
        axis.set_title(dataset)
        axis.grid(alpha=0.3)
    _legend(axes[0][0])
    paths.append(_save(figure, output / "accuracy_vs_speed.png"))
    plt.close(figure)
    return paths
