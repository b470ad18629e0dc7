"""Which machine a measurement came from (benchmark rows and reports name it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name(cpuinfo_text: str | None = None) -> str:
    """The CPU model, its family/model numbers and the core count, e.g. ``"AMD EPYC (family 26, model 2), 2 cores"``.

    Timings from different machines are not comparable, so every benchmark row records this. Cloud VMs often report
    a generic model name ("AMD EPYC", "Intel(R) Xeon(R) Processor") for different CPU generations, which run the
    same job at very different speeds, hence the family and model numbers from ``/proc/cpuinfo``.

    Args:
        cpuinfo_text: The text of ``/proc/cpuinfo``; read from the system when ``None`` (the argument is for tests).

    """
    if cpuinfo_text is None:
        cpuinfo = Path("/proc/cpuinfo")
        cpuinfo_text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    first: dict[str, str] = {}  # the first processor's fields: its block ends at the first blank line
    for line in cpuinfo_text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            first.setdefault(key.strip(), value.strip())
    # platform.processor() runs `uname -p` in a subprocess on Linux: only ask it when cpuinfo names no CPU.
    cpu = first.get("model name") or platform.processor() or platform.machine()
    if first.get("cpu family") and first.get("model"):
        cpu += f" (family {first['cpu family']}, model {first['model']})"
    return f"{cpu}, {os.cpu_count()} cores"


def machine_description() -> str:
    """One line about this machine: CPU, cores, Python and torch versions."""
    from importlib.metadata import version

    return f"{cpu_name()}, Python {platform.python_version()}, torch {version('torch')}"
