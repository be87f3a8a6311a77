"""Command-line flags from a config dataclass: one `--field-name` flag per field, with the field's default.

A training script's recipe is a dataclass; its flags are the fields, spelled with dashes. `bool` fields are
switches with a negative form (`--resume` / `--no-resume`); `list[T]` and `tuple[T, ...]` fields take one or more
values; any other type (`int`, `float`, `str`, each optionally `| None`) converts the flag's text to that type.
A flag's help is its field's comment in the dataclass's source (`field_comments`), so `--help` says what the
recipe's own source says, and its default.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def _flag_type(hint: Any) -> tuple[Any, type | None]:
    """(the type a flag's text converts to, the container of its values: list, tuple or None for one value) of a
    field's resolved annotation."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))  # `X | None`: X
    container = typing.get_origin(hint)
    if container in (list, tuple):
        return typing.get_args(hint)[0], container
    return hint, None


def field_comments(cls: type) -> dict[str, str]:
    """The comment that documents each field of the class `cls` in its source, by field name.

    A field's comment is the one on its line, continued by the comment-only lines right below it; a field with none
    on its line takes the comment-only lines right above it (those below a field that has its own belong to that
    field). Fields without any are left out; {} where the source cannot be read (a class made at run time).
    """
    try:
        source = textwrap.dedent("".join(inspect.getsourcelines(cls)[0]))
    except (OSError, TypeError):
        return {}
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT}
    lines = source.splitlines()

    def comment_only(number: int) -> bool:
        return number in comments and lines[number - 1].lstrip().startswith("#")

    (node,) = ast.parse(source).body
    assert isinstance(node, ast.ClassDef)
    fields = [(item.target.id, item.lineno, item.end_lineno or item.lineno) for item in node.body
              if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)]
    found: dict[str, str] = {}
    claimed: set[int] = set()  # comment-only lines already continuing the field above them
    for name, first, last in fields:
        if last in comments and not comment_only(last):
            numbers = [last]
            while comment_only(numbers[-1] + 1):
                numbers.append(numbers[-1] + 1)
            claimed.update(numbers)
        else:
            numbers = []
            while comment_only(first - len(numbers) - 1) and first - len(numbers) - 1 not in claimed:
                numbers.insert(0, first - len(numbers) - 1)
        if numbers:
            found[name] = " ".join(comments[number] for number in numbers)
    return found


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type[DataclassInstance], *,
                        choices: Mapping[str, Iterable[Any]] | None = None,
                        helps: Mapping[str, str] | None = None) -> None:
    """Adds one flag per field of the dataclass `cls` to `parser`, defaulting to the field's default.

    `choices` and `helps` map field names to the allowed values and the help text of that field's flag (without
    one, the field's comment, `field_comments`); every flag's help ends with its default.
    """
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            raise TypeError(f"{cls.__name__}.{field.name} has no default, so it cannot be an optional flag")
        described = (helps or {}).get(field.name, comments.get(field.name, "")).replace("%", "%%")  # argparse
        # formats help with %: a literal one is doubled
        options: dict[str, Any] = {"default": default, "help": (described + " (default: %(default)s)").lstrip()}
        kind, container = _flag_type(hints[field.name])
        if kind is bool and container is None:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
            continue
        if container is not None:
            options["nargs"] = "+"
        if choices and field.name in choices:
            options["choices"] = list(choices[field.name])
        parser.add_argument(flag, type=kind, **options)


def dataclass_from_args(cls: type[T], args: argparse.Namespace | Mapping[str, Any]) -> T:
    """The `cls` instance the parsed flags describe (flags that are not fields of `cls` are left out; the values of
    a `tuple[T, ...]` field, parsed as a list, become a tuple)."""
    values = vars(args) if isinstance(args, argparse.Namespace) else args
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        value = values[field.name]
        if value is not None and _flag_type(hints[field.name])[1] is tuple:
            value = tuple(value)
        kwargs[field.name] = value
    return cls(**kwargs)
