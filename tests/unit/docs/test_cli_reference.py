"""docs/reference/cli.md is what tests/support/cli_reference.py renders from the `helmrelease` parser."""

from __future__ import annotations

import argparse

from tests.support.cli_reference import REFERENCE_PATH, REGENERATE, commands, render

from helmrelease.cli import build_parser


def test_the_committed_command_reference_is_rendered_from_the_current_parser() -> None:
    committed = REFERENCE_PATH.read_text() if REFERENCE_PATH.exists() else ""
    assert committed == render(), (
        f"{REFERENCE_PATH.name} is out of date: run `{REGENERATE}` and commit the result"
    )


def test_every_command_and_every_flag_has_its_place() -> None:
    text = render()
    for path, parser in commands(build_parser()):
        assert f"## `{' '.join(('helmrelease', *path))}`" in text
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help", "--version"):
                    assert f"`{option}" in text, (path, option)


def test_a_new_flag_shows_in_the_reference() -> None:
    """The check cannot pass by accident: a flag added to a command appears, with its help."""
    parser = build_parser()
    run = next(p for path, p in commands(parser) if path == ("run",))
    run.add_argument(
        "--added-in-test", metavar="N", default=3, help="a flag of this test (default %(default)s)"
    )
    assert isinstance(run, argparse.ArgumentParser)
    text = render(parser)
    assert text != render()
    assert "| `--added-in-test N` | a flag of this test (default 3) |" in text
