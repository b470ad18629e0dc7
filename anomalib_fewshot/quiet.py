"""Quiet console output for the ``anomalib-fewshot`` verbs (``demo``, ``benchmark``, ``recommend``, ``fdsl-pretrain``).

Importing anomalib, timm and Lightning prints deprecation and "possible user" warnings that a user of these verbs
cannot act on (``timm.models.layers`` is deprecated, anomalib's dinov2 package is deprecated, few dataloader
workers, ...). The verbs hide every warning that is not ours unless ``--verbose`` is given; warnings of ours
(:class:`~anomalib_fewshot.errors.AnomalibFewshotWarning`) always show. The stock ``anomalib`` verbs that
``anomalib-fewshot`` passes through (train, test, export, ...) are left exactly as anomalib prints them.

This module imports nothing heavy: the filter must be in place before anomalib is imported.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence

VERBOSE_FLAG = "--verbose"
VERBOSE_HELP = "also show third-party warnings (hidden by default: deprecations of anomalib's dependencies)"


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--verbose`` to a verb's parser (the filter itself is set by :func:`quiet_unless_verbose`)."""
    parser.add_argument(VERBOSE_FLAG, action="store_true", help=VERBOSE_HELP)


def hide_third_party_warnings() -> None:
    """Ignore every warning except ours (:class:`~anomalib_fewshot.errors.AnomalibFewshotWarning`)."""
    from anomalib_fewshot.errors import AnomalibFewshotWarning

    warnings.simplefilter("ignore")
    warnings.simplefilter("default", AnomalibFewshotWarning)  # inserted first: matched before "ignore"


def quiet_unless_verbose(argv: Sequence[str]) -> bool:
    """Hide third-party warnings unless ``argv`` holds ``--verbose``; return whether they are hidden."""
    if VERBOSE_FLAG in argv:
        return False
    hide_third_party_warnings()
    return True
