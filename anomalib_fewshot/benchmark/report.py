"""The benchmark report: ``results.md`` from ``results.csv`` (progress, mean ± std tables, failures, plots).

``summarise`` builds the table (mean ± std over seeds per model × variant × dataset × k) and the list of failed
jobs; ``write_report`` adds the header (command, machines, progress), the jobs left out on purpose and the plots.
"""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from anomalib_fewshot.benchmark.machine import machine_description
from anomalib_fewshot.benchmark.store import finished_keys, job_key, job_label, read_rows
from anomalib_fewshot.components.io.atomic import atomic_write_text

METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1max", "pixel_f1max", "image_f1", "image_fpr", "image_tpr")
TIMINGS = ("fit_s", "torch_ms", "openvino_ms", "peak_rss_mb")


def summarise(
    rows: list[dict[str, str]],
    jobs: list[dict[str, Any]] | None = None,
    expected: dict[tuple[str, ...], str] | None = None,
) -> str:
    """Markdown table: mean ± std over seeds per model × variant × dataset × k (only the grid's ``jobs``).

    Failed jobs are listed below the table, those in ``expected`` (key → reason) marked as expected failures.
    """
    if jobs is not None:
        wanted = {job_key(job) for job in jobs}
        rows = [r for r in rows if job_key(r) in wanted]
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for row in rows:
        if row.get("status") == "ok":
            key = job_key(row)
            groups.setdefault((key[0], key[1], key[2], key[3]), []).append(row)
    header = ["model", "variant", "dataset", "k", "seeds", *METRICS, *TIMINGS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in sorted(groups, key=_sort_key):
        group = groups[key]
        cells = [*key, str(len(group))]
        for field in (*METRICS, *TIMINGS):
            values = [float(r[field]) for r in group if r.get(field)]
            if not values:
                cells.append("–")
                continue
            mean = statistics.mean(values)
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{mean:.3f} ± {std:.3f}" if field in METRICS else f"{mean:.1f} ± {std:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    maskless = sorted({r["dataset"] for r in rows if r.get("status") == "ok" and not r.get("pixel_auroc")})
    if maskless:
        lines += ["", f"Datasets without pixel masks (image labels only; pixel columns –): {', '.join(maskless)}."]
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        expected = expected or {}
        lines += ["", "Failed jobs:"]
        for r in failed:
            note = f" (expected: {expected[job_key(r)]})" if job_key(r) in expected else ""
            lines.append(f"- {job_label(r)}{note}: {r.get('error', '')}")
    return "\n".join(lines) + "\n"


def _sort_key(key: tuple[str, ...]) -> tuple[Any, ...]:
    """Model, variant, dataset, then k numerically (``full`` last)."""
    k = key[3]
    return (*key[:3], int(k) if k.isdigit() else float("inf"))


def write_report(
    config_path: Path,
    output: Path,
    jobs: list[dict[str, Any]],
    skipped: list[tuple[dict[str, Any], str]],
    expected: dict[tuple[str, ...], str] | None = None,
) -> Path:
    """Write ``results.md`` (and the plots) from ``results.csv``: progress, tables, left-out jobs.

    ``expected`` (job key → reason) marks expected failures, which count as finished once recorded.
    """
    rows = read_rows(output / "results.csv")
    ok, failed_as_expected = finished_keys(rows, jobs, expected or {})
    n_done = len(ok) + len(failed_as_expected)
    as_expected = f", {len(failed_as_expected)} of them failed as expected" if failed_as_expected else ""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = (
        f"# Benchmark results\n\ncommand: `anomalib-fewshot benchmark -c {config_path}`  \n"
        f"report written on: {machine_description()}  \n{_machines_line(rows)}updated: {stamp}  \n"
        f"progress: {n_done} of {len(jobs)} jobs finished{as_expected}"
        f"{' (complete)' if n_done == len(jobs) else ' (rerun the command to resume)'}\n\n"
        "Metrics on raw model outputs mapped monotonically to [0, 1] (no clamping, no post-processor); "
        "AUPRO at FPR ≤ 0.3; image_f1 / image_fpr (good parts rejected) / image_tpr (defective parts caught) = "
        "the OK/NG decision at the threshold the model ships, calibrated from the shots alone (the baselines "
        "calibrated the same way); fit_s = shot selection + weights + pool/bank building + training (excludes "
        "validation; the runner validates on one batch only, the metrics never use that pass); "
        "torch_ms / openvino_ms = median per image at batch 1 of the full exported pipeline "
        "(OpenVINO f32); peak_rss_mb = peak resident memory of the job process. results.csv also records "
        "load_avg_1m per job: above the core count, other work shared the CPU and that row's timings are "
        "pessimistic.\n\n"
        + summarise(rows, jobs, expected)
        + precision_section(rows, jobs)
        + _skipped_section(skipped)
        + _plots_section(rows, output)
    )
    return atomic_write_text(output / "results.md", report)


#: The per-precision columns of an INT8 grid (:mod:`anomalib_fewshot.benchmark.int8`).
PRECISION_METRICS = ("image_auroc", "pixel_auroc", "aupro")
PRECISION_TIMINGS = ("openvino_ms", "bf16_openvino_ms", "int8_openvino_ms", "int8_speedup")


def precision_section(rows: list[dict[str, str]], jobs: list[dict[str, Any]] | None = None) -> str:
    """Markdown table of an INT8 grid (empty when no row has INT8 columns).

    Per model × variant × dataset × k, the mean over seeds of each metric in FP32 (eager) and its change in INT8
    and bf16 OpenVINO; the three OpenVINO timings (measured interleaved) and the FP32/INT8 speed-up.
    """
    if jobs is not None:
        wanted = {job_key(job) for job in jobs}
        rows = [r for r in rows if job_key(r) in wanted]
    rows = [r for r in rows if r.get("status") == "ok" and r.get("int8_image_auroc")]
    if not rows:
        return ""
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(job_key(row)[:4], []).append(row)

    def mean(group: list[dict[str, str]], field: str) -> float:
        return statistics.mean(float(r[field]) for r in group)

    header = ["model", "variant", "dataset", "k", "seeds"]
    header += [f"{m} FP32 / Δ INT8 / Δ bf16" for m in PRECISION_METRICS] + [*PRECISION_TIMINGS, "worst Δ INT8"]
    lines = [
        "",
        "## FP32, bf16 and INT8 OpenVINO",
        "",
        "Δ = OpenVINO graph minus the eager FP32 model on the same test images (mean over seeds); the three "
        "timings are medians per image, interleaved in one process (FP32 with the f32 hint, bf16, INT8 with the "
        "f32 hint for its floating-point layers); int8_speedup = FP32 / INT8 ms. Targets: |Δ INT8| ≤ 0.01 for "
        "every metric, int8_speedup ≥ 1.5.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for key in sorted(groups, key=_sort_key):
        group = groups[key]
        cells = [*key, str(len(group))]
        worst = 0.0
        for metric in PRECISION_METRICS:
            if not all(r.get(metric) for r in group):  # a dataset without masks: no pixel metrics
                cells.append("–")
                continue
            base = mean(group, metric)
            d_int8, d_bf16 = mean(group, f"int8_{metric}") - base, mean(group, f"bf16_{metric}") - base
            worst = max(worst, max(abs(float(r[f"int8_{metric}"]) - float(r[metric])) for r in group))
            cells.append(f"{base:.3f} / {d_int8:+.3f} / {d_bf16:+.3f}")
        cells += [
            f"{mean(group, field):.2f}" if field == "int8_speedup" else f"{mean(group, field):.1f}"
            for field in PRECISION_TIMINGS
        ]
        cells.append(f"{worst:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _machines_line(rows: list[dict[str, str]]) -> str:
    """Which machines the finished rows ran on (timings are comparable only within one machine)."""
    counts = Counter(row.get("machine") or "not recorded" for row in rows if row.get("status") == "ok")
    if not counts:
        return ""
    listed = "; ".join(f"{name} ({n} row{'s' if n > 1 else ''})" for name, n in sorted(counts.items()))
    return f"rows ran on: {listed}  \n"


def _skipped_section(skipped: list[tuple[dict[str, Any], str]]) -> str:
    """The jobs left out on purpose, grouped by reason (four keys shown per reason)."""
    if not skipped:
        return ""
    reasons: dict[str, list[str]] = {}
    for job, reason in skipped:
        reasons.setdefault(reason, []).append(job_label(job))
    lines = ["", "Left out on purpose:"]
    for reason, keys in reasons.items():
        shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
        lines.append(f"- {reason}: {len(keys)} job(s) ({shown})")
    return "\n".join(lines) + "\n"


def _plots_section(rows: list[dict[str, str]], output: Path) -> str:
    """Write the plots next to results.csv and link them."""
    from anomalib_fewshot.benchmark.plots import write_plots

    paths = write_plots(rows, output)
    return "".join(f"\n![{p.stem}]({p.name})\n" for p in paths)
