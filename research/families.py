"""Which synthetic defect families rank the models like real defects? The family mix ``recommend`` ranks with.

    python -m research.families --dev docs/benchmarks/dev_decision/results.csv
        --test docs/benchmarks/real/results.csv docs/benchmarks/screw_test/results.csv
        --output docs/benchmarks/dev/families                                                (one line)

A development row carries the image AUROC of every defect family alone (``image_auroc@scratch`` ...: the family's
defective images against all the clean ones). For each dataset and k, the models' development value of a family (or
of a mix: the mean of the families in it) is rank-correlated (Spearman) with their image AUROC on the real test
split; the families' scores are then compared by the mean of those correlations over every (dataset, k).

The mix is chosen by a rule fixed before any number was seen: the subset of families with the highest mean
correlation over the (dataset, k) cells (ties: more families, the broader proxy). Because that choice reads the
test splits, it is checked by leaving each dataset out: the mix chosen on the other datasets alone is scored on the
one left out, which is the estimate for a part none of the correlations saw; the mix replaces the pooled split only
if that estimate beats the pooled split's on the same cells.

Nothing here changes a model default; the chosen mix is what ``recommend`` ranks with
(:data:`anomalib_fewshot.benchmark.recommend.RANKING_FAMILIES`).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from anomalib_fewshot.benchmark.store import read_rows, write_rows
from anomalib_fewshot.components.io.atomic import atomic_write_text
from anomalib_fewshot.data.defects import FAMILIES
from research.correlate import paired_configurations, spearman

ALL = "all"


def family_pairs(dev_csv: Path, test_csvs: list[Path]) -> list[dict[str, Any]]:
    """Configurations with rows on both splits, with each family's development image AUROC."""
    test_rows = [row for path in test_csvs for row in read_rows(path)]
    columns = tuple(f"image_auroc@{family}" for family in FAMILIES)
    return paired_configurations(read_rows(dev_csv), test_rows, dev_only=columns)


def mix_value(pair: dict[str, Any], mix: tuple[str, ...]) -> float | None:
    """The development image AUROC of ``mix``: every family's mean (``("all",)``: the pooled split's own AUROC)."""
    if mix == (ALL,):
        return pair["dev_image_auroc"]
    values = [pair.get(f"dev_image_auroc@{family}") for family in mix]
    return None if any(v is None for v in values) else statistics.mean(values)


def cells(pairs: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """The configurations grouped per (dataset, k): the models a user would rank against each other."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for pair in pairs:
        grouped[(pair["dataset"], int(pair["k_shot"]))].append(pair)
    return dict(sorted(grouped.items()))


def cell_spearman(group: list[dict[str, Any]], mix: tuple[str, ...]) -> float | None:
    """Spearman of the mix's development value and the real image AUROC over one cell's models."""
    paired = [(mix_value(p, mix), p["test_image_auroc"]) for p in group]
    paired = [(d, t) for d, t in paired if d is not None]
    return spearman([d for d, _ in paired], [t for _, t in paired])


def mean_spearman(grouped: dict[tuple[str, int], list[dict[str, Any]]], mix: tuple[str, ...]) -> float | None:
    """The mean of :func:`cell_spearman` over the cells where it is defined."""
    values = [rho for group in grouped.values() if (rho := cell_spearman(group, mix)) is not None]
    return statistics.mean(values) if values else None


def candidate_mixes() -> list[tuple[str, ...]]:
    """Every non-empty subset of the families, in :data:`FAMILIES` order."""
    return [mix for size in range(1, len(FAMILIES) + 1) for mix in itertools.combinations(FAMILIES, size)]


def choose_mix(grouped: dict[tuple[str, int], list[dict[str, Any]]]) -> tuple[str, ...]:
    """The subset with the highest mean correlation (ties: more families, then :data:`FAMILIES` order)."""
    scored = [(mean_spearman(grouped, mix), mix) for mix in candidate_mixes()]
    scored = [(rho, mix) for rho, mix in scored if rho is not None]
    if not scored:
        msg = "no (dataset, k) cell has three models with rows on both splits: nothing to choose a mix from"
        raise ValueError(msg)
    best = max(rho for rho, _ in scored)
    tied = [mix for rho, mix in scored if rho >= best - 1e-12]
    return max(tied, key=len)


def leave_one_dataset_out(grouped: dict[tuple[str, int], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per dataset: the mix chosen on the other datasets and its correlation on this one, per k."""
    datasets = sorted({dataset for dataset, _ in grouped})
    out = []
    for held_out in datasets:
        others = {cell: group for cell, group in grouped.items() if cell[0] != held_out}
        if not others:
            continue
        mix = choose_mix(others)
        for (dataset, k_shot), group in grouped.items():
            if dataset == held_out:
                out.append({"dataset": dataset, "k_shot": k_shot, "mix": "+".join(mix),
                            "spearman": cell_spearman(group, mix), "all": cell_spearman(group, (ALL,))})  # fmt: skip
    return out


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def families(dev_csv: Path, test_csvs: list[Path], output: Path) -> str:
    """Write ``pairs.csv``, ``families.csv`` and ``families.md`` to ``output``; return the Markdown."""
    pairs = family_pairs(dev_csv, test_csvs)
    grouped = cells(pairs)
    chosen = choose_mix(grouped)
    columns = {ALL: (ALL,), **{family: (family,) for family in FAMILIES}, f"mix ({'+'.join(chosen)})": chosen}
    table = []
    for (dataset, k_shot), group in grouped.items():
        row: dict[str, Any] = {"dataset": dataset, "k_shot": k_shot, "models": len(group)}
        row.update({name: cell_spearman(group, mix) for name, mix in columns.items()})
        table.append(row)
    held_out = leave_one_dataset_out(grouped)
    output.mkdir(parents=True, exist_ok=True)
    write_rows(output / "pairs.csv", pairs)
    write_rows(output / "families.csv", table)
    names = list(columns)
    lines = [
        f"Development families vs real defects: {len(pairs)} configurations with rows on both splits "
        f"({dev_csv} vs {', '.join(map(str, test_csvs))}). Spearman of the models' development image AUROC (the "
        "pooled split, each family alone, the chosen mix) with their image AUROC on the real test split, per "
        "dataset and k.",
        "",
        "| dataset | k | models | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for row in table:
        lines.append(f"| {row['dataset']} | {row['k_shot']} | {row['models']} | "
                     + " | ".join(_fmt(row[name]) for name in names) + " |")  # fmt: skip
    means = [_fmt(mean_spearman(grouped, mix)) for mix in columns.values()]
    lines.append("| **mean** | | | " + " | ".join(means) + " |")
    lines += [
        "",
        f"Chosen mix (highest mean; ties: more families): **{'+'.join(chosen)}**.",
        "",
        "Left out: the mix chosen on the other datasets alone, scored on the one left out (beside the pooled split).",
        "",
        "| dataset left out | k | mix chosen without it | Spearman | pooled split |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['dataset']} | {r['k_shot']} | {r['mix']} | {_fmt(r['spearman'])} | {_fmt(r['all'])} |"
              for r in held_out]  # fmt: skip
    scored = [r for r in held_out if r["spearman"] is not None and r["all"] is not None]
    if scored:
        mix_mean = statistics.mean(r["spearman"] for r in scored)
        pooled_mean = statistics.mean(r["all"] for r in scored)
        verdict = "adopt the mix" if mix_mean > pooled_mean else "keep the pooled split"
        lines += [
            f"| **mean** | | | {_fmt(mix_mean)} | {_fmt(pooled_mean)} |",
            "",
            f"Verdict (rule: a mix replaces the pooled split only if, chosen without a dataset, it ranks that dataset "
            f"better on average): **{verdict}**.",
        ]
    text = "\n".join(lines) + "\n"
    atomic_write_text(output / "families.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    """Print the family table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dev", type=Path, required=True, help="a development grid's results.csv")
    parser.add_argument("--test", type=Path, nargs="+", required=True, help="test grids' results.csv")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    print(families(args.dev, args.test, args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
