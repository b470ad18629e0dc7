"""The accuracy issues' development-split target, checked on a grid's ``results.csv``.

For every dataset and k, paired by seed with a baseline (anomalib's Patchcore on the same shots), the mean over seeds
of each metric must be at least the baseline's minus ``max(floor, standard error of the paired differences)``; and
no metric may fall from the smallest to the largest k by more than the larger of those two k's seed standard
deviations. A cell without every requested seed of both models is reported as missing, never as met.

    python -m research.target docs/benchmarks/dev/results.csv --model Pcsnet
        --variant pcsnet_lite [--baseline Patchcore] [--k-shot 1 2 4] [--seeds 0 1 2] [--output FILE.md]
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from anomalib_fewshot.benchmark.store import read_rows

TARGET_METRICS = ("image_auroc", "pixel_auroc", "aupro")


@dataclass(frozen=True)
class Cell:
    """One dataset × k × metric comparison."""

    dataset: str
    k_shot: int
    metric: str
    model: float | None  # mean over seeds (None: seeds missing)
    baseline: float | None
    margin: float  # max(floor, standard error of the paired differences)
    seeds: int

    @property
    def met(self) -> bool | None:
        """Whether the model's mean is at least the baseline's minus the margin (``None``: missing seeds)."""
        if self.model is None or self.baseline is None:
            return None
        return self.model >= self.baseline - self.margin


@dataclass(frozen=True)
class KFall:
    """How much one metric falls from the smallest to the largest k (negative: it rises)."""

    dataset: str
    metric: str
    fall: float | None
    allowed: float

    @property
    def met(self) -> bool | None:
        """Whether the fall is within the larger seed standard deviation of the two k."""
        return None if self.fall is None else self.fall <= self.allowed


def _values(rows: list[dict[str, str]], model: str, variant: str, dataset: str, k: int) -> dict[int, dict[str, float]]:
    out = {}
    for row in rows:
        if (row["model"], row.get("variant", ""), row["dataset"], str(row["k_shot"])) != (
            model,
            variant,
            dataset,
            str(k),
        ):
            continue
        if row.get("status") == "ok":
            out[int(row["seed"])] = {metric: float(row[metric]) for metric in TARGET_METRICS}
    return out


def check_target(
    rows: list[dict[str, str]],
    model: str,
    variant: str,
    baseline: str = "Patchcore",
    baseline_variant: str = "",
    k_shots: Sequence[int] = (1, 2, 4),
    seeds: Sequence[int] = (0, 1, 2),
    floor: float = 0.005,
) -> tuple[list[Cell], list[KFall]]:
    """The target's cells (per dataset, k and metric) and k-falls (per dataset and metric) for ``model``/``variant``."""
    datasets = sorted({row["dataset"] for row in rows if (row["model"], row.get("variant", "")) == (model, variant)})
    cells, falls = [], []
    for dataset in datasets:
        per_k = {}
        for k in k_shots:
            mine = _values(rows, model, variant, dataset, k)
            base = _values(rows, baseline, baseline_variant, dataset, k)
            complete = all(seed in mine and seed in base for seed in seeds)
            per_k[k] = mine if all(seed in mine for seed in seeds) else None
            for metric in TARGET_METRICS:
                if not complete:
                    cells.append(Cell(dataset, k, metric, None, None, floor, 0))
                    continue
                diffs = [mine[s][metric] - base[s][metric] for s in seeds]
                error = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
                cells.append(
                    Cell(
                        dataset,
                        k,
                        metric,
                        statistics.mean(mine[s][metric] for s in seeds),
                        statistics.mean(base[s][metric] for s in seeds),
                        max(floor, error),
                        len(seeds),
                    )
                )
        low, high = min(k_shots), max(k_shots)
        for metric in TARGET_METRICS:
            if per_k.get(low) is None or per_k.get(high) is None or low == high:
                falls.append(KFall(dataset, metric, None, 0.0))
                continue
            first = [per_k[low][s][metric] for s in seeds]
            last = [per_k[high][s][metric] for s in seeds]
            spread = max(statistics.stdev(first), statistics.stdev(last)) if len(seeds) > 1 else 0.0
            falls.append(KFall(dataset, metric, statistics.mean(first) - statistics.mean(last), spread))
    return cells, falls


def _verdict(met: bool | None) -> str:
    return "missing" if met is None else ("met" if met else "**not met**")


def format_target(cells: list[Cell], falls: list[KFall], model: str, variant: str, baseline: str) -> str:
    """Markdown: one row per dataset × k × metric, then the k-falls, then the overall verdict."""
    lines = [
        f"Target for {model} {variant} against {baseline} (mean over seeds; margin = max(floor, SE of the paired "
        "differences))",
        "",
        f"| dataset | k | metric | {model} | {baseline} | difference | margin | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        if cell.model is None or cell.baseline is None:
            lines.append(f"| {cell.dataset} | {cell.k_shot} | {cell.metric} | – | – | – | – | missing |")
            continue
        lines.append(
            f"| {cell.dataset} | {cell.k_shot} | {cell.metric} | {cell.model:.3f} | {cell.baseline:.3f} | "
            f"{cell.model - cell.baseline:+.3f} | {cell.margin:.3f} | {_verdict(cell.met)} |"
        )
    lines += ["", "| dataset | metric | fall from the smallest to the largest k | allowed (larger seed std) | |",
              "|---|---|---|---|---|"]  # fmt: skip
    for fall in falls:
        value = "–" if fall.fall is None else f"{fall.fall:+.3f}"
        lines.append(f"| {fall.dataset} | {fall.metric} | {value} | {fall.allowed:.3f} | {_verdict(fall.met)} |")
    verdicts = [c.met for c in cells] + [f.met for f in falls]
    held = sum(v is True for v in verdicts)
    overall = "missing rows" if None in verdicts else ("met" if all(verdicts) else "not met")
    lines += ["", f"Overall: {overall} ({held} of {len(verdicts)} checks hold)."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: print (and optionally write) the target table of one model variant."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="results CSVs, read together (e.g. a grid and a rescore)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--baseline", default="Patchcore")
    parser.add_argument("--k-shot", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = [row for path in args.results for row in read_rows(path)]
    cells, falls = check_target(rows, args.model, args.variant, args.baseline, "", args.k_shot, args.seeds)
    text = format_target(cells, falls, args.model, args.variant, args.baseline)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)


if __name__ == "__main__":
    main()
