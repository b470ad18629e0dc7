"""The INT8 quantisation-scope screen of a development grid: which scope each model's INT8 export quantises.

    python -m research.int8_screen docs/benchmarks/int8_dev/results.csv

Reads the ``int8@<scope>_*`` columns that ``research/grids/int8_dev.yaml`` writes (``int8: [scopes]``) and prints a
Markdown table with the scope chosen per model (the fastest one within the accuracy target of FP32).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from anomalib_fewshot.benchmark.int8 import COMPARED, TARGET_DELTA


def screen_table(rows: list[dict[str, str]]) -> tuple[str, dict[str, str]]:
    """The scope screen of a development grid: a Markdown table and the scope chosen per model.

    Per model, the chosen scope is the fastest (mean ``int8@<scope>_speedup``) among those whose every metric
    stays within :data:`TARGET_DELTA` of FP32 on every dataset; when none does, the one with the smallest worst
    |Δ| (accuracy before speed).
    """
    rows = [r for r in rows if r.get("status") == "ok"]
    from anomalib_fewshot.components.lifecycle.quantization import SCOPES

    scopes = [s for s in SCOPES if any(r.get(f"int8@{s}_image_auroc") for r in rows)]
    lines = [
        "| model | dataset | scope | " + " | ".join(f"Δ {m}" for m in COMPARED) + " | FP32 ms | INT8 ms | speed-up |"
    ]
    lines.append("|" + "---|" * (len(COMPARED) + 6))
    worst: dict[tuple[str, str], float] = {}
    speed: dict[tuple[str, str], list[float]] = {}
    for row in sorted(rows, key=lambda r: (r["model"], r["dataset"])):
        for scope in scopes:
            prefix = f"int8@{scope}_"
            if not row.get(prefix + "image_auroc"):
                continue
            deltas = [float(row[prefix + m]) - float(row[m]) for m in COMPARED]
            key = (row["model"], scope)
            worst[key] = max(worst.get(key, 0.0), *(abs(d) for d in deltas))
            speed.setdefault(key, []).append(float(row[prefix + "speedup"]))
            cells = [row["model"], row["dataset"], scope, *(f"{d:+.3f}" for d in deltas)]
            cells += [row["openvino_ms"], row[prefix + "openvino_ms"], row[prefix + "speedup"]]
            lines.append("| " + " | ".join(cells) + " |")
    chosen = {}
    for model in sorted({m for m, _ in worst}):
        candidates = [s for m, s in worst if m == model]
        within = [s for s in candidates if worst[(model, s)] <= TARGET_DELTA]
        if within:
            chosen[model] = max(within, key=lambda s: statistics.mean(speed[(model, s)]))
        else:
            chosen[model] = min(candidates, key=lambda s: worst[(model, s)])
    lines += ["", "| model | chosen scope | worst |Δ| | mean speed-up |", "|---|---|---|---|"]
    for model, scope in chosen.items():
        key = (model, scope)
        lines.append(f"| {model} | {scope} | {worst[key]:.3f} | {statistics.mean(speed[key]):.2f} |")
    return "\n".join(lines) + "\n", chosen


def main(argv: list[str] | None = None) -> None:
    """``python -m research.int8_screen RESULTS_CSV``: print the scope screen and the choice per model."""
    import argparse

    from anomalib_fewshot.benchmark.store import read_rows

    parser = argparse.ArgumentParser(description=(main.__doc__ or "").splitlines()[0])
    parser.add_argument("results", type=Path, help="results.csv of an int8 scope screen (research/grids/int8_dev.yaml)")
    args = parser.parse_args(argv)
    table, _ = screen_table(read_rows(args.results))
    print(table, end="")


if __name__ == "__main__":
    main()
