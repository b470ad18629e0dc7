"""The base class of every error anomalib_fewshot raises on purpose (bad input, argument, file or checkpoint).

Each concrete error also derives from the built-in it replaces (``ValueError``, ``RuntimeError``), so existing
``except ValueError`` code keeps working, and ``except AnomalibFewshotError`` catches all of ours at once. The
``anomalib-fewshot`` command prints these as one ``error:`` line (no traceback) and exits with status 2.

This module imports nothing, so importing it never pulls in torch or anomalib.
"""

from __future__ import annotations

__all__ = [
    "AnomalibFewshotError",
    "AnomalibFewshotWarning",
    "InvalidArgumentError",
    "MissingDependencyError",
    "MissingFileError",
]


class AnomalibFewshotError(Exception):
    """An error whose message already names the file or argument at fault and what to do about it."""


class InvalidArgumentError(AnomalibFewshotError, ValueError):
    """A constructor, config or command-line argument outside what the method supports (the message names it)."""


class MissingFileError(AnomalibFewshotError, FileNotFoundError):
    """A file the user named (config, model, weights) that does not exist (the message names it)."""


class MissingDependencyError(AnomalibFewshotError, ImportError):
    """An optional package a chosen component needs is not installed (the message says what to install)."""


class AnomalibFewshotWarning(UserWarning):
    """A warning of ours: shown even when the ``anomalib-fewshot`` verbs hide third-party warnings."""
