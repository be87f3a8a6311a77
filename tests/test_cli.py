"""recsys.cli: one flag per config dataclass field, with the field's default and type."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from recsys.cli import add_dataclass_flags, dataclass_from_args, field_comments


@dataclass
class Recipe:
    data_dir: str | None = None
    epochs: float = 1.0
    # taken by the field below, which has no comment of its own
    pool: int | None = None
    loss: str = "vocab"  # "vocab": 100% of the
    # vocabulary, continued here (not the next field's)
    years: bool = True
    resume: bool = False  # "#1" in a string starts no comment
    cuts: list[int] = field(default_factory=lambda: [30, 60])
    lengths: tuple[str, ...] = ("5", "uncut")


def parse(argv: list[str]) -> tuple[Recipe, argparse.Namespace]:
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, Recipe, choices={"loss": ("vocab", "letters")}, helps={"resume": "continue"})
    parser.add_argument("--extra", action="store_true")
    args = parser.parse_args(argv)
    return dataclass_from_args(Recipe, args), args


def test_defaults_are_the_fields_defaults():
    recipe, args = parse([])
    assert recipe == Recipe() and not args.extra


def test_flags_convert_to_the_field_types():
    recipe, args = parse(["--data-dir", "d", "--epochs", "2.5", "--pool", "30", "--loss", "letters", "--no-years",
                          "--resume", "--cuts", "10", "20", "--lengths", "10", "--extra"])
    assert recipe == Recipe("d", 2.5, 30, "letters", False, True, [10, 20], ("10",)) and args.extra


def test_choices_are_enforced():
    with pytest.raises(SystemExit):
        parse(["--loss", "other"])


def test_each_flag_is_described_by_its_fields_comment_and_default():
    assert field_comments(Recipe) == {"pool": "taken by the field below, which has no comment of its own",
                                      "loss": '"vocab": 100% of the vocabulary, continued here (not the next field\'s)',
                                      "resume": '"#1" in a string starts no comment'}
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, Recipe, helps={"resume": "continue"})
    text = " ".join(parser.format_help().split())
    for line in ("--epochs EPOCHS (default: 1.0)",
                 "--pool POOL taken by the field below, which has no comment of its own (default: None)",
                 "\"vocab\": 100% of the vocabulary, continued here (not the next field's) (default: vocab)",
                 "--years, --no-years (default: True)", "--resume, --no-resume continue (default: False)"):
        assert line in text
