"""The command line shared by the lab's table tools: one results CSV in, one Markdown table printed (and saved)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from anomalib_fewshot.benchmark.store import read_rows
from anomalib_fewshot.components.io.atomic import atomic_write_text


def run_table_tool(
    doc: str | None,
    table: Callable[[list[dict[str, str]], Path], str],
    filename: str,
    results_help: str,
    argv: list[str] | None = None,
) -> str:
    """Parse ``RESULTS [--output DIR]``, build ``table(rows, RESULTS)``, write it to ``DIR/filename`` and print it.

    Args:
        doc: the tool's module docstring (its first line is the description).
        table: rows and the CSV's path → the Markdown text.
        filename: the file written in ``--output``.
        results_help: the help of the ``results`` argument.
        argv: the arguments (default: ``sys.argv``).

    Returns:
        The Markdown text.

    """
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("results", type=Path, help=results_help)
    parser.add_argument("--output", type=Path, default=None, help=f"folder for {filename} (default: print only)")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        parser.error(f"results: no such file: {args.results}")
    text = table(read_rows(args.results), args.results)
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output / filename, text)
    print(text)
    return text
