"""Which machine a measurement came from (benchmark rows and reports name it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model and core count, e.g. ``"AMD EPYC, 2 cores"``.

    Timings from different machines are not comparable, so every benchmark row records this.
    """
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} cores"


def machine_description() -> str:
    """One line about this machine: CPU, cores, Python and torch versions."""
    from importlib.metadata import version

    return f"{cpu_name()}, Python {platform.python_version()}, torch {version('torch')}"
