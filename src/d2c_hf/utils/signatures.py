"""Options declared once: a loader that forwards its keyword options to a constructor shows (and checks)
the constructor's own.

``from_pretrained(cls, model, vae=AUTO, **options)`` loads models, then calls ``cls(model, vae, **options)``:
writing the twenty options out again would give two lists that drift apart. :func:`forwards_options_to`
gives the loader the signature of its own leading parameters followed by the constructor's keyword-only
parameters, so ``help()``, ``inspect.signature`` and notebooks show every option with its default, and
:func:`check_option_names` refuses a misspelt option before anything loads.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def keyword_options(target: Callable[..., Any], drop: Iterable[str] = ()) -> list[inspect.Parameter]:
    """``target``'s keyword-only parameters, in order, without those in ``drop``."""
    dropped = set(drop)
    return [
        p
        for p in inspect.signature(target).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in dropped
    ]


def forwards_options_to(target: Callable[..., Any], *, drop: Iterable[str] = ()) -> Callable[[F], F]:
    """Decorator: ``function(<leading parameters>, **options)`` gets the signature of its leading
    parameters followed by ``target``'s keyword-only parameters (those in ``drop`` left out: the ones the
    function fills itself)."""
    dropped = tuple(drop)

    def decorate(function: F) -> F:
        own = inspect.signature(function)
        leading = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        function.__signature__ = own.replace(parameters=[*leading, *keyword_options(target, dropped)])
        return function

    return decorate


def check_option_names(
    options: Mapping[str, Any], target: Callable[..., Any], where: str, drop: Iterable[str] = ()
) -> None:
    """Raise ``TypeError`` naming an option ``target`` does not take (as Python would, but before any
    expensive work)."""
    known = {p.name for p in keyword_options(target, drop)}
    for name in options:
        if name not in known:
            raise TypeError(
                f"{where}() got an unexpected keyword argument {name!r}; it takes {sorted(known)}"
            )


__all__ = ["check_option_names", "forwards_options_to", "keyword_options"]
