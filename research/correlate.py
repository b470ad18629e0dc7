"""Does the development split predict the test split? Rank correlation of development vs test metrics.

    python -m research.correlate --dev docs/benchmarks/dev/results.csv
        --test docs/benchmarks/real/results.csv --output docs/benchmarks/dev/correlation
        [--branches docs/benchmarks/dev/branches/branches.csv]                               (one line)

A *configuration* is a model, variant, dataset and k that has ok rows on both splits; its value on a split is the
mean over the seeds present on both. Within each dataset and for each metric, the Spearman rank correlation of the
configurations' development and test values is reported (with the number of configurations: a correlation over a
handful of points is weak evidence, and the table says how many there were), and a scatter plot per dataset is
written. ``--branches`` adds each model's branches alone (its ablations, scored on both splits from the same
development-grid checkpoints by :mod:`research.branch_pairs`). Nothing here changes a default;
it tells how much a development gain may be trusted.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from anomalib_fewshot.benchmark.store import read_rows, write_rows
from anomalib_fewshot.components.io.atomic import atomic_write_text

METRICS = ("image_auroc", "pixel_auroc", "aupro")


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (scipy); ``None`` below 3 points or when a side is constant."""
    from scipy.stats import spearmanr

    if len(x) != len(y):
        msg = f"spearman needs paired values, got {len(x)} and {len(y)}"
        raise ValueError(msg)
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def paired_configurations(
    dev_rows: list[dict[str, str]], test_rows: list[dict[str, str]], dev_only: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """One entry per configuration with ok rows on both splits: seed means of each metric on each split.

    ``dev_only`` names further development columns (e.g. per-family ``image_auroc@blob``) averaged the same way; a
    configuration whose development rows lack one has it as ``None``.
    """
    by_split: dict[str, dict[tuple[str, ...], dict[str, dict[str, str]]]] = {"dev": {}, "test": {}}
    for split, rows in (("dev", dev_rows), ("test", test_rows)):
        for row in rows:
            if row.get("status") != "ok":
                continue
            config = (row["model"], row.get("variant") or row.get("profile", ""), row["dataset"], str(row["k_shot"]))
            by_split[split].setdefault(config, {})[str(row["seed"])] = row
    out = []
    for config in sorted(set(by_split["dev"]) & set(by_split["test"])):
        seeds = sorted(set(by_split["dev"][config]) & set(by_split["test"][config]))
        if not seeds:
            continue
        entry: dict[str, Any] = dict(zip(("model", "variant", "dataset", "k_shot"), config, strict=True))
        entry["seeds"] = len(seeds)
        for split in ("dev", "test"):
            for metric in METRICS:
                values = [float(by_split[split][config][s][metric]) for s in seeds]
                entry[f"{split}_{metric}"] = round(statistics.mean(values), 4)
        for column in dev_only:
            cells = [by_split["dev"][config][s].get(column) for s in seeds]
            entry[f"dev_{column}"] = round(statistics.mean(map(float, cells)), 4) if all(cells) else None
        out.append(entry)
    return out


def branch_configurations(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Configurations from a ``branch_pairs`` CSV: each branch of a model alone (an ablation of it), per dataset and k.

    A branch's value on a split is the mean over the jobs (seeds) scored on both splits; its ``model`` is
    ``MODEL:branch``.
    """
    by_job: dict[tuple[str, ...], dict[str, dict[str, str]]] = defaultdict(dict)
    for row in rows:
        by_job[(row["model"], row["branch"], row["dataset"], str(row["k_shot"]), row["job"])][row["split"]] = row
    grouped: dict[tuple[str, ...], list[dict[str, dict[str, str]]]] = defaultdict(list)
    for (model, branch, dataset, k_shot, _), splits in by_job.items():
        if {"dev", "test"} <= set(splits):
            grouped[(model, branch, dataset, k_shot)].append(splits)
    out = []
    for (model, branch, dataset, k_shot), members in sorted(grouped.items()):
        entry: dict[str, Any] = {"model": f"{model}:{branch}", "variant": members[0]["dev"].get("variant", ""),
                                 "dataset": dataset, "k_shot": k_shot, "seeds": len(members)}  # fmt: skip
        for split in ("dev", "test"):
            for metric in METRICS:
                entry[f"{split}_{metric}"] = round(statistics.mean(float(m[split][metric]) for m in members), 4)
        out.append(entry)
    return out


def correlation_table(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spearman correlation per dataset and metric over the paired configurations."""
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for pair in pairs:
        by_dataset[pair["dataset"]].append(pair)
    rows = []
    for dataset, group in sorted(by_dataset.items()):
        for metric in METRICS:
            rho = spearman([p[f"dev_{metric}"] for p in group], [p[f"test_{metric}"] for p in group])
            rows.append({"dataset": dataset, "metric": metric, "configurations": len(group), "spearman": rho})
    return rows


def _plot(pairs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({p["dataset"] for p in pairs})
    figure, axes = plt.subplots(len(datasets), len(METRICS), figsize=(4 * len(METRICS), 3.4 * len(datasets)))
    axes = [[axes]] if len(datasets) == 1 and len(METRICS) == 1 else axes
    for row, dataset in enumerate(datasets):
        group = [p for p in pairs if p["dataset"] == dataset]
        for column, metric in enumerate(METRICS):
            axis = axes[row][column] if len(datasets) > 1 else axes[column]
            for pair in group:
                axis.scatter(pair[f"dev_{metric}"], pair[f"test_{metric}"], s=18)
                axis.annotate(f"{pair['model']} k={pair['k_shot']}", (pair[f"dev_{metric}"], pair[f"test_{metric}"]),
                              fontsize=6)  # fmt: skip
            axis.set_xlabel(f"development {metric}")
            axis.set_ylabel(f"test {metric}")
            axis.set_title(dataset, fontsize=9)
            axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def correlate(dev_csv: Path, test_csv: Path, output: Path, branches_csv: Path | None = None) -> str:
    """Write ``pairs.csv``, ``correlation.csv``, ``correlation.md`` and ``scatter.png`` to ``output``; return the md.

    ``branches_csv`` (from :mod:`research.branch_pairs`) adds every branch alone as a
    configuration (the models' ablations); the table then reports the models, the branches and both together.
    """
    model_pairs = paired_configurations(read_rows(dev_csv), read_rows(test_csv))
    branch_pairs = branch_configurations(read_rows(branches_csv)) if branches_csv is not None else []
    pairs = model_pairs + branch_pairs
    table = correlation_table(pairs)
    if branch_pairs:
        table = (
            [{**row, "configurations_of": "models"} for row in correlation_table(model_pairs)]
            + [{**row, "configurations_of": "branches"} for row in correlation_table(branch_pairs)]
            + [{**row, "configurations_of": "both"} for row in table]
        )
    output.mkdir(parents=True, exist_ok=True)
    write_rows(output / "pairs.csv", pairs)
    write_rows(output / "correlation.csv", table)
    if pairs:
        _plot(pairs, output / "scatter.png")
    sources = f"{dev_csv} vs {test_csv}" + (f", branches: {branches_csv}" if branches_csv is not None else "")
    lines = [
        f"Development vs test: {len(pairs)} configurations with rows on both splits ({sources}).",
        "",
        "| dataset | metric | configurations of | configurations | Spearman |",
        "|---|---|---|---|---|",
    ]
    for row in table:
        rho = "–" if row["spearman"] is None else f"{row['spearman']:.2f}"
        kind = row.get("configurations_of", "models")
        lines.append(f"| {row['dataset']} | {row['metric']} | {kind} | {row['configurations']} | {rho} |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(output / "correlation.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    """Print the correlation table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dev", type=Path, required=True, help="a development grid's results.csv")
    parser.add_argument("--test", type=Path, required=True, help="a test grid's results.csv")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--branches", type=Path, default=None, help="a branch_pairs branches.csv (the ablations)")
    args = parser.parse_args(argv)
    print(correlate(args.dev, args.test, args.output, args.branches))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
