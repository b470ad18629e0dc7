"""How much does a fit vary with its training seed alone? The spread table of a grid with ``train_seeds`` (issue 50).

    anomalib-fewshot benchmark -c research/grids/train_seed_spread.yaml
    python -m research.seed_spread docs/benchmarks/train_seed_spread/results.csv \
        --output docs/benchmarks/train_seed_spread

Per model × variant × dataset × k × few-shot seed (the shots fixed), over the finished rows' training seeds: the
mean, standard deviation (sample) and range (max − min) of each metric. The ``branches.csv`` of
:mod:`research.branch_pairs` reads the same way, one group per branch as well (where a fit's spread enters):

    python -m research.seed_spread docs/benchmarks/dev/train_seed_spread_branches/branches.csv \
        --output docs/benchmarks/dev/train_seed_spread_branches

A group whose standard deviation exceeds :data:`LIMIT` in any metric is flagged: a user who fits the same part twice
may get two noticeably different models. A measurement: it chooses nothing.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from anomalib_fewshot.benchmark.store import train_seed
from research.table_cli import run_table_tool

METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1max", "image_f1", "image_fpr", "image_tpr")
#: What a group shares: everything of the job key but the training seed (and the branch, in a ``branches.csv``).
GROUP = ("model", "variant", "dataset", "k_shot", "seed", "split")
BRANCH = "branch"
#: Standard deviation above which a group is flagged (issue 50: a README warning and a lead on the cause).
LIMIT = 0.02


def spread(rows: list[dict[str, str]]) -> list[dict[str, object]]:
    """One record per group with at least two training seeds: its seeds and, per metric, mean / std / range.

    A row without a ``status`` column (a ``branches.csv`` row: only measured branches are written) counts as
    finished; rows with a ``branch`` column are grouped per branch as well.
    """
    fields = GROUP + ((BRANCH,) if any(BRANCH in row for row in rows) else ())
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for row in rows:
        if row.get("status", "ok") == "ok":
            key = tuple(str(row.get(field) or ("test" if field == "split" else "")) for field in fields)
            groups.setdefault(key, []).append(row)
    out = []
    for key, group in sorted(groups.items()):
        seeds = sorted({str(train_seed(row)) for row in group}, key=lambda s: int(s) if s.isdigit() else s)
        if len(seeds) < 2:
            continue
        record: dict[str, object] = dict(zip(fields, key, strict=True))
        record["train_seeds"] = seeds
        flagged = []
        for metric in METRICS:
            values = [float(row[metric]) for row in group if row.get(metric) not in (None, "")]
            if len(values) < 2:
                continue
            std = statistics.stdev(values)
            record[metric] = (statistics.mean(values), std, max(values) - min(values))
            if std > LIMIT:
                flagged.append(metric)
        record["flagged"] = flagged
        out.append(record)
    return out


def markdown(records: list[dict[str, object]], source: Path) -> str:
    """The spread table (``mean ± std [range]`` per metric) and the flagged groups."""
    branch = [BRANCH] if any(BRANCH in record for record in records) else []
    metrics = [m for m in METRICS if any(m in record for record in records)] or list(METRICS)
    header = ["model", "variant", *branch, "dataset", "k", "shots seed", "split", "training seeds", *metrics]
    header.append(f"std > {LIMIT}")
    lines = [
        f"Training-seed spread from `{source}`: shots fixed (their few-shot seed), training seeds varied; per metric "
        "mean ± sample std [range].",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for record in records:
        cells = [str(record[f]) for f in ("model", "variant", *branch, "dataset", "k_shot", "seed", "split")]
        cells.append(", ".join(record["train_seeds"]))  # type: ignore[arg-type]
        for metric in metrics:
            value = record.get(metric)
            cells.append("–" if value is None else "{:.3f} ± {:.3f} [{:.3f}]".format(*value))  # type: ignore[misc]
        cells.append(", ".join(record["flagged"]) or "no")  # type: ignore[arg-type]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module doc)."""
    run_table_tool(
        __doc__,
        lambda rows, source: markdown(spread(rows), source),
        "spread.md",
        "a results.csv with several training seeds per job",
        argv,
    )


if __name__ == "__main__":
    main()
