"""``anomalib-fewshot``: anomalib's CLI with our models registered, plus the ``demo`` verb.

* ``anomalib-fewshot demo [--output DIR] [--model M]``: generate the offline demo dataset, train a model (lite
  profile, 1-shot; PCSNet by default), test (prints metrics), export to OpenVINO, and draw the exported model's
  heat-maps of good and defective test images in ``gallery.png``.
* ``anomalib-fewshot benchmark -c CONFIG``: run (or resume) a benchmark grid, see ``configs/benchmark``.
* ``anomalib-fewshot recommend --images DIR --output OUT``: rank the models and shot counts for a folder of good
  images of one part on its development split (synthetic defects), within a time budget estimated first;
  ``--dataset SPEC.yaml`` ranks them on the user's labelled images (an anomalib ``Folder``) instead.
* ``anomalib-fewshot fit-parts PARTS.yaml [--ray [ADDRESS]]``: one model per part of a plant (fit on its good
  images, check on its development split, export) into a catalogue ``parts.csv`` (:mod:`.benchmark.parts`).
* ``anomalib-fewshot calibrate --ckpt_path CKPT [--rule fpr --target_fpr 0.01] [--source DIR]``: set a fitted
  checkpoint's OK/NG thresholds again from good images alone (:mod:`anomalib_fewshot.calibrate`).
* ``anomalib-fewshot profile MODEL.xml [--precision bf16] [--threads N]``: time per op type and the slowest nodes of
  an exported OpenVINO graph (:mod:`anomalib_fewshot.profile`).
* ``anomalib-fewshot <verb> ...``: a model's prerequisite step, from the registry (``ModelSpec.prerequisites``), e.g.
  ``anomalib-fewshot fdsl-pretrain``: FDSL stage 1, train the head on an annotated test split (see its ``--help``).
* ``anomalib-fewshot <anything else>``: exactly ``anomalib <anything else>`` (train, test, export, ...).
* ``anomalib-fewshot`` or ``anomalib-fewshot --help``: our verbs, then anomalib's (:func:`help_text`, imports nothing
  heavy).

Our verbs hide third-party warnings (deprecations of anomalib's dependencies that the user cannot act on) unless
``--verbose`` is given (:mod:`anomalib_fewshot.quiet`); the verbs passed to ``anomalib`` print as anomalib does.

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
    from anomalib_fewshot.demo import DEMO_MODEL
    from anomalib_fewshot.quiet import add_verbose_flag

    parser = argparse.ArgumentParser(prog="anomalib-fewshot demo", description=(__doc__ or "").splitlines()[2])
    parser.add_argument("--output", type=Path, default=Path("anomalib_fewshot_demo"), help="output folder")
    parser.add_argument("--model", default=DEMO_MODEL, help=f"Dfd, Pcsnet, Ed or Fdsl (default {DEMO_MODEL})")
    parser.add_argument("--profile", default=None, help="model config in configs/model (default: the lite profile)")
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="few-shot seed")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    parser.add_argument("--samples-per-shot", type=int, default=None, help="override DFD's pool size")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE",
        help="override any constructor argument of the profile (YAML values, e.g. --set anomaly_map=cas)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)

    from anomalib_fewshot.demo import run_demo

    summary = run_demo(
        output=args.output,
        model=args.model,
        profile=args.profile,
        k_shot=args.k_shot,
        seed=args.seed,
        overrides=_overrides(args),
        progress=not args.no_progress,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """``--epochs``, ``--samples-per-shot`` and ``--set KEY=VALUE`` (values parsed as YAML) as constructor arguments."""
    from anomalib_fewshot.config import parse_set_overrides

    overrides = parse_set_overrides(args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.samples_per_shot is not None:
        overrides["samples_per_shot"] = args.samples_per_shot
    return overrides


#: The verbs of ours (the registry's prerequisite steps are ours too); anything else is passed to ``anomalib``.
OWN_VERBS = ("demo", "benchmark", "recommend", "fit-parts", "calibrate", "profile")

#: ``--help``'s list of our verbs, the registry's prerequisite steps included (written out so that ``--help`` imports
#: neither torch nor anomalib; ``tests/cli/test_help.py`` checks it against :data:`OWN_VERBS` and the registry).
OWN_VERB_HELP = {
    "demo": "generate demo data, train, test, export and draw a heat-map gallery (one command)",
    "recommend": "rank the models and shot counts for a folder of good images of your part",
    "fit-parts": "one model per part (fit, check, export) into a catalogue, locally or on Ray (parts.yaml)",
    "benchmark": "run or resume a benchmark grid (configs/benchmark/*.yaml)",
    "calibrate": "set a checkpoint's OK/NG thresholds again from good images (another rule or false-alarm rate)",
    "profile": "where an exported OpenVINO graph spends its time, per op type and per node",
    "fdsl-pretrain": "FDSL stage 1, train the head on an annotated test split",
}

#: anomalib 2.7's own sub-commands, passed through unchanged (checked against anomalib's parser by the tests).
ANOMALIB_VERB_HELP = {
    "train": "fit the model and then test it",
    "fit": "fit the model",
    "validate": "one evaluation pass over the validation set",
    "test": "one evaluation pass over the test set",
    "predict": "run inference on images, a folder or a datamodule",
    "export": "export the model to Torch, ONNX or OpenVINO (optionally INT8)",
    "install": "install anomalib's optional dependencies",
}
#: anomalib's sub-commands that ours shadow: its ``benchmark`` pipeline runs as ``anomalib benchmark``.
SHADOWED_ANOMALIB_VERBS = ("benchmark",)
#: The registered models, for the help text (checked against the registry by the tests).
MODEL_NAMES = "Dfd, Ed, Fdsl, Pcsnet"


def help_text() -> str:
    """The ``anomalib-fewshot --help`` text: our verbs first, then anomalib's (static, no heavy import)."""
    from anomalib_fewshot._version import __version__

    width = max(map(len, [*OWN_VERB_HELP, *ANOMALIB_VERB_HELP]))
    lines = [
        "usage: anomalib-fewshot <command> [options]",
        "",
        f"anomalib-fewshot {__version__}: few-shot anomaly detection models ({MODEL_NAMES}) for anomalib.",
        "",
        "our commands:",
        *(f"  {verb:<{width}}  {text}" for verb, text in OWN_VERB_HELP.items()),
        "",
        "anomalib's commands, run exactly as `anomalib <command>` with our models registered:",
        *(f"  {verb:<{width}}  {text}" for verb, text in ANOMALIB_VERB_HELP.items()),
        "",
        "`anomalib-fewshot <command> --help` shows a command's options. anomalib's own benchmark pipeline is",
        "`anomalib benchmark` (our `benchmark` runs our grids). Docs: README.md and docs/README.md.",
    ]
    return "\n".join(lines)


def _prerequisite_main(verb: str) -> Callable[[Sequence[str] | None], int] | None:
    """The sub-command of the registered prerequisite step called ``verb`` (e.g. ``fdsl-pretrain``), if any."""
    from anomalib_fewshot.models import REGISTRY

    for spec in REGISTRY.values():
        for step in spec.prerequisites:
            if step.verb == verb:
                return step.main
    return None


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(help_text())
        return 0
    if argv[0] == "--version":
        from anomalib_fewshot._version import __version__

        print(f"anomalib-fewshot {__version__}")
        return 0
    import warnings

    from anomalib_fewshot.quiet import quiet_unless_verbose

    # Looking a verb up among the registry's prerequisite steps imports anomalib, whose imports warn: hold those
    # warnings until we know whose verb it is, then drop them (ours, quiet) or show them as they would have been.
    with warnings.catch_warnings(record=True) as held:
        ours = bool(argv) and (argv[0] in OWN_VERBS or _prerequisite_main(argv[0]) is not None)
    if not (ours and quiet_unless_verbose(argv[1:])):
        for item in held:
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)
    if argv and argv[0] == "demo":
        return _demo(argv[1:])
    if argv and argv[0] == "benchmark":
        from anomalib_fewshot.benchmark.runner import main as benchmark_main

        return benchmark_main(argv[1:])
    if argv and argv[0] == "recommend":
        from anomalib_fewshot.benchmark.recommend import main as recommend_main

        return recommend_main(argv[1:])
    if argv and argv[0] == "fit-parts":
        from anomalib_fewshot.benchmark.parts import main as parts_main

        return parts_main(argv[1:])
    if argv and argv[0] == "calibrate":
        from anomalib_fewshot.calibrate import main as calibrate_main

        return calibrate_main(argv[1:])
    if argv and argv[0] == "profile":
        from anomalib_fewshot.profile import main as profile_main

        return profile_main(argv[1:])
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
    from anomalib_fewshot.errors import AnomalibFewshotError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, AnomalibFewshotError):
            return str(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return _our_constructor_error(str(exc))


def _our_constructor_error(text: str) -> str | None:
    """Our model constructor's message inside a jsonargparse union error, if that is what ``text`` is.

    jsonargparse (the ``anomalib`` CLI's parser) tries each type of ``--model`` (``None``, ``AnomalibModule``)
    and reports every alternative's message as a ``  - ...`` line under ``Errors:``, chaining only the first
    (``Expected a <class 'NoneType'>``). When the value's class path is one of ours, the other line is what our
    constructor raised.
    """
    if "class_path='anomalib_fewshot." not in text or "\nErrors:\n" not in text:
        return None
    listed = text.split("\nErrors:\n", 1)[1].split("\nGiven value", 1)[0]
    messages = [line.strip()[2:] for line in listed.splitlines() if line.strip().startswith("- ")]
    ours = [message for message in messages if not message.startswith("Expected a ")]
    return "; ".join(ours) or None


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
