"""Command-line flags derived from a settings dataclass, so that a setting is declared once.

A field declared with ``setting(default, "help")`` carries its name, type, default and help; the
`bitvla` command builds one flag per field from it (``add_arguments``) and the settings back from
the parsed flags (``from_arguments``). Naming: ``batch_size`` is ``--batch-size``; a bool that
defaults to False is a switch ``--name``, one that defaults to True is ``--no-name``. Anything else
argparse needs (``action="append"``, ``nargs``, ``choices``) goes in ``setting(..., **argparse)``.

This module imports nothing of the package, so any layer may declare its settings with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import MISSING

_SCALARS = (int, float, str)


def setting(default=MISSING, help: str = "", *, default_factory=MISSING, cli: bool = True, **argparse_kwargs):
    """A dataclass field with its command-line help; ``cli=False`` keeps it off the command line."""
    metadata = {"help": help, "cli": cli, "argparse": argparse_kwargs}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def cli_fields(kind) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(kind) if f.metadata.get("cli", True)]


def add_arguments(parser: argparse.ArgumentParser, kind) -> None:
    """One flag per command-line field of dataclass ``kind``."""
    hints = typing.get_type_hints(kind)
    for f in cli_fields(kind):
        flag = "--" + f.name.replace("_", "-")
        kwargs = {"dest": f.name, "help": f.metadata.get("help") or None, **f.metadata.get("argparse", {})}
        if f.default is MISSING and f.default_factory is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default if f.default is not MISSING else f.default_factory()
        value_type = _value_type(hints[f.name], f.name, kind)
        if value_type is bool:
            if kwargs.get("default") is True:
                flag = "--no-" + f.name.replace("_", "-")
                kwargs["action"] = "store_false"
            else:
                kwargs["action"] = "store_true"
        else:
            kwargs.setdefault("type", value_type)
        shown = kwargs.get("default")
        if kwargs["help"] and shown is not None and not isinstance(shown, (bool, list)):
            kwargs["help"] += " (default: %(default)s)"
        parser.add_argument(flag, **kwargs)


def from_arguments(kind, args: argparse.Namespace, **overrides):
    """The settings ``kind`` from parsed flags (``overrides`` for fields kept off the command line)."""
    return kind(**{f.name: getattr(args, f.name) for f in cli_fields(kind)}, **overrides)


def _value_type(hint, name: str, kind):
    """The type argparse converts one value to: X for X, X | None, list[X] and X | list[X]."""
    if hint in (bool, *_SCALARS):
        return hint
    if typing.get_origin(hint) is list:
        return _value_type(typing.get_args(hint)[0], name, kind)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = {_value_type(a, name, kind) for a in typing.get_args(hint) if a is not type(None)}
        if len(options) == 1:
            return options.pop()
    raise TypeError(f"{kind.__name__}.{name}: type {hint} has no command-line form; declare it with "
                    "setting(..., cli=False) or give it a scalar type")
