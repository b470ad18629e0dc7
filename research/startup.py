"""Measure what the start-up hook adds to ``python -c pass``.

``python -m research.startup [--runs 40]`` runs a fresh interpreter ``--runs`` times with the
hook enabled and disabled (``ANOMALIB_FEWSHOT_NO_AUTOLOAD=1``: the ``.pth`` line still imports the two small
modules but installs no finder), interleaved, prints the medians, and the in-process import time of the ``.pth``
line from ``-X importtime`` (the hook's whole start-up cost), as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone


def _time(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True)
    return time.perf_counter() - start


def _hook_import_ms() -> float:
    """In-process cost of the ``.pth`` line: package + hook module imports (``-X importtime``, cumulative)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, check=True
    )
    total = 0
    for line in result.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        # top-level entries: the package, then the hook module (each cumulative over what it imports)
        if len(parts) == 3 and parts[2] in ("anomalib_fewshot", "anomalib_fewshot._autoload"):
            total += int(parts[1])
    return total / 1000


def main(argv: list[str] | None = None) -> None:
    """Print the start-up table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args(argv)
    env_on = {k: v for k, v in os.environ.items() if k != "ANOMALIB_FEWSHOT_NO_AUTOLOAD"}
    env_off = {**env_on, "ANOMALIB_FEWSHOT_NO_AUTOLOAD": "1"}
    cmd = [sys.executable, "-c", "pass"]
    for _ in range(3):  # warm the file cache
        _time(cmd, env_on)
    on, off = [], []
    for _ in range(args.runs):
        on.append(_time(cmd, env_on))
        off.append(_time(cmd, env_off))
    med_on, med_off = statistics.median(on) * 1000, statistics.median(off) * 1000
    print(f"command: python -m research.startup --runs {args.runs}")
    from anomalib_fewshot.benchmark.machine import machine_description

    print(f"machine: {machine_description()}")
    print(f"date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    print()
    print("| measurement | median ms |")
    print("|---|---|")
    print(f"| `python -c pass`, hook enabled | {med_on:.1f} |")
    print(f"| `python -c pass`, hook disabled (ANOMALIB_FEWSHOT_NO_AUTOLOAD=1) | {med_off:.1f} |")
    print(f"| difference (hook cost) | {med_on - med_off:.1f} |")
    print(f"| `-X importtime`: anomalib_fewshot + anomalib_fewshot._autoload (cumulative) | {_hook_import_ms():.1f} |")


if __name__ == "__main__":
    main()
