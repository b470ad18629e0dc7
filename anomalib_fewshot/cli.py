"""``anomalib-fewshot``: anomalib's CLI with our models registered, plus the ``demo`` verb.

* ``anomalib-fewshot demo [--output DIR]``: generate the offline demo dataset, train DFD (lite profile,
  1-shot), test (prints metrics, writes heat-maps), export to OpenVINO and run the exported model.
* ``anomalib-fewshot benchmark -c CONFIG``: run (or resume) a benchmark grid, see ``configs/benchmark``.
* ``anomalib-fewshot recommend --images DIR --output OUT``: rank the models and shot counts for a folder of good
  images of one part on its development split (synthetic defects), within a time budget estimated first.
* ``anomalib-fewshot <verb> ...``: a model's prerequisite step, from the registry (``ModelSpec.prerequisites``), e.g.
  ``anomalib-fewshot fdsl-pretrain``: FDSL stage 1, train the head on an annotated test split (see its ``--help``).
* ``anomalib-fewshot <anything else>``: exactly ``anomalib <anything else>`` (train, test, export, ...).

Errors of ours (:class:`~anomalib_fewshot.errors.AnomalibFewshotError`: a bad argument, image, shot request,
weights file, head or checkpoint) are printed as one ``anomalib-fewshot: error: ...`` line that names the file or
argument, and the command exits with status 2; set ``ANOMALIB_FEWSHOT_TRACEBACK=1`` for the full traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def _demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="anomalib-fewshot demo", description=(__doc__ or "").splitlines()[2])
    parser.add_argument("--output", type=Path, default=Path("anomalib_fewshot_demo"), help="output folder")
    parser.add_argument("--profile", default="dfd_lite", help="model config in configs/model (default dfd_lite)")
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="few-shot seed")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    parser.add_argument("--samples-per-shot", type=int, default=None, help="override the profile's pool size")
    args = parser.parse_args(argv)

    from anomalib_fewshot.workflows import run_demo

    summary = run_demo(
        output=args.output,
        profile=args.profile,
        k_shot=args.k_shot,
        seed=args.seed,
        epochs=args.epochs,
        samples_per_shot=args.samples_per_shot,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _prerequisite_main(verb: str) -> Callable[[Sequence[str] | None], int] | None:
    """The sub-command of the registered prerequisite step called ``verb`` (e.g. ``fdsl-pretrain``), if any."""
    from anomalib_fewshot.models import REGISTRY

    for spec in REGISTRY.values():
        for step in spec.prerequisites:
            if step.verb == verb:
                return step.main
    return None


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "demo":
        return _demo(argv[1:])
    if argv and argv[0] == "benchmark":
        from anomalib_fewshot.benchmark.runner import main as benchmark_main

        return benchmark_main(argv[1:])
    if argv and argv[0] == "recommend":
        from anomalib_fewshot.benchmark.recommend import main as recommend_main

        return recommend_main(argv[1:])
    prerequisite = _prerequisite_main(argv[0]) if argv else None
    if prerequisite is not None:
        return prerequisite(argv[1:])
    from anomalib.cli.cli import main as anomalib_main

    import anomalib_fewshot.models  # noqa: F401 - registers the models even without the start-up hook

    sys.argv = ["anomalib", *argv]
    anomalib_main()
    return 0


def _our_error(exc: BaseException) -> str | None:
    """The message of ``exc`` or of the error of ours it wraps (Lightning and jsonargparse may wrap them)."""
    from anomalib_fewshot.errors import AnomalibFewshotError, last_message

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, AnomalibFewshotError):
            return str(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    message = last_message()
    if message and message in str(exc):  # a parser error that lists ours among its alternatives
        return message
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``anomalib-fewshot`` command."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _dispatch(argv)
    except Exception as exc:
        ours = _our_error(exc)
        if ours is None or os.environ.get("ANOMALIB_FEWSHOT_TRACEBACK"):
            raise
        print(f"anomalib-fewshot: error: {ours}", file=sys.stderr)
        print("(set ANOMALIB_FEWSHOT_TRACEBACK=1 to see the full traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
