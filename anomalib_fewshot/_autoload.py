"""One-shot import hook that registers our models with an unmodified Anomalib.

Anomalib 2.7 has no plugin discovery: ``anomalib --model Dfd`` and ``anomalib.models.get_model("dfd")``
only see :class:`~anomalib.models.components.AnomalibModule` subclasses that are already imported. The
wheel ships ``anomalib_fewshot_autoload.pth`` at site-packages root; it imports this module at interpreter
start. This module imports neither torch nor anomalib: it only puts a finder on ``sys.meta_path`` that waits
for ``anomalib.models`` to be imported and then imports :mod:`anomalib_fewshot.models` right after it.

Set ``ANOMALIB_FEWSHOT_NO_AUTOLOAD=1`` to disable the hook.
"""

from __future__ import annotations

import os
import sys

_TRIGGER = "anomalib.models"
_PLUGIN = "anomalib_fewshot.models"


def _load_plugin() -> None:
    import importlib
    import warnings

    try:
        importlib.import_module(_PLUGIN)
    except Exception as exc:
        from anomalib_fewshot.errors import AnomalibFewshotWarning

        message = f"{_PLUGIN} could not be registered with anomalib: {exc!r}"
        warnings.warn(message, AnomalibFewshotWarning, stacklevel=2)


class _AnomalibModelsFinder:
    """A ``sys.meta_path`` finder that finds nothing itself.

    On the first import of ``anomalib.models`` it removes itself, asks the other finders for the real spec and
    wraps that loader's ``exec_module`` so that our models are imported right after ``anomalib.models``.
    """

    def find_spec(self, fullname, path, target=None):
        """Intercept the first import of ``anomalib.models``."""
        if fullname != _TRIGGER:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            _load_plugin()

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Install the hook (idempotent); import the plugin at once if ``anomalib.models`` is already imported."""
    if os.environ.get("ANOMALIB_FEWSHOT_NO_AUTOLOAD"):
        return
    if _TRIGGER in sys.modules:
        _load_plugin()
    elif not any(isinstance(finder, _AnomalibModelsFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AnomalibModelsFinder())


install()
