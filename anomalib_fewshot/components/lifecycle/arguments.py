"""Constructor-argument checks derived from the signature itself.

A ``Literal[...]`` annotation already lists an argument's choices; :func:`check_arguments` reads them from the
annotation, so a model never repeats them in a hand-written "must be one of" check.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from anomalib_fewshot.errors import InvalidArgumentError


@functools.cache
def literal_choices(function: Callable[..., Any]) -> dict[str, tuple[Any, ...]]:
    """The choices of every ``Literal``-annotated parameter of ``function`` (``X | None`` adds ``None``)."""
    hints = typing.get_type_hints(function)
    choices: dict[str, tuple[Any, ...]] = {}
    for name, hint in hints.items():
        origin = typing.get_origin(hint)
        if origin is Literal:
            choices[name] = typing.get_args(hint)
        elif origin in (typing.Union, types.UnionType):
            members = typing.get_args(hint)
            literals = [m for m in members if typing.get_origin(m) is Literal]
            if literals and all(typing.get_origin(m) is Literal or m is type(None) for m in members):
                values = tuple(v for m in literals for v in typing.get_args(m))
                choices[name] = values + ((None,) if type(None) in members else ())
    return choices


def check_arguments(
    function: Callable[..., Any],
    values: Mapping[str, Any],
    positive: Iterable[str] = (),
    unit_interval: Iterable[str] = (),
) -> None:
    """Check ``values`` (a constructor's arguments) against ``function``'s ``Literal`` choices.

    Args:
        function: the constructor (``SomeModel.__init__``) whose annotations list the choices.
        values: the arguments as passed (``locals()`` or ``hparams``); names not present are not checked.
        positive: names of integer arguments that must be at least 1 (``None``, where allowed, is not checked).
        unit_interval: names of arguments (weights, exponents) that must lie in ``[0, 1]``.

    Raises:
        InvalidArgumentError: naming the argument, its value and the allowed values.

    """
    for name, allowed in literal_choices(function).items():
        if name in values and values[name] not in allowed:
            msg = f"{name} must be one of {allowed}, got {values[name]!r}"
            raise InvalidArgumentError(msg)
    for name in positive:
        if values[name] is not None and values[name] < 1:
            msg = f"{name} must be >= 1, got {values[name]}"
            raise InvalidArgumentError(msg)
    for name in unit_interval:
        if not 0.0 <= values[name] <= 1.0:
            msg = f"{name} must be in [0, 1], got {values[name]}"
            raise InvalidArgumentError(msg)


def select_arguments(
    function: Callable[..., Any], values: Mapping[str, Any], renames: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The keyword arguments of ``function`` taken by name from ``values`` (a Lightning model's ``hparams``).

    A Lightning model keeps its explicit, typed constructor (anomalib's style) and builds its torch model and loss
    with ``TorchModel(**select_arguments(TorchModel.__init__, self.hparams))`` instead of forwarding every
    argument by hand.

    Args:
        function: the callee (``SomeModel.__init__``); ``self`` and ``*args``/``**kwargs`` are skipped.
        values: the caller's arguments by name.
        renames: ``{callee parameter: key in values}`` where the names differ.

    Raises:
        TypeError: a parameter without a default is missing from ``values`` (a wrong rename shows here).

    """
    renames = renames or {}
    selected: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        key = renames.get(name, name)
        if key in values:
            selected[name] = values[key]
        elif parameter.default is parameter.empty:
            msg = f"{getattr(function, '__qualname__', function)} needs {name!r}, which the caller does not have"
            raise TypeError(msg)
    unknown = sorted(set(renames.values()) - set(values))
    if unknown:
        msg = f"renamed arguments {unknown} are not among the caller's"
        raise TypeError(msg)
    return selected
