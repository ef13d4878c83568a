"""`make docs`: docs/reference/cli.md, every `helmrelease` command and argument, generated from the parser itself.

The flags, their defaults and their HELMRELEASE_* variables are defined once, in helmrelease.cli; the page is a table
per command of what `--help` says of each argument, with the machine's temporary directory written as `$TMPDIR`
(the default of `--state-dir` depends on it). tests/unit/docs/test_cli_reference.py fails while the committed page
differs from `render()`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator

from helmrelease.cli import build_parser
from tests.support.procs import REPO_ROOT

REFERENCE_PATH = REPO_ROOT / "docs" / "reference" / "cli.md"
REGENERATE = "make docs"


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(command words, parser) of `parser` and of every subcommand below it, depth first."""
    yield path, parser
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def _pipes(text: str) -> str:
    """A table cell's `|` escaped, as GitHub wants even inside code spans."""
    return text.replace("|", "\\|")


def _cell(text: str) -> str:
    """Help text as a table cell: one line, `<name>` shown rather than read as HTML."""
    return _pipes(" ".join(text.split()).replace("<", "&lt;").replace(">", "&gt;"))


def _invocation(action: argparse.Action) -> str:
    """How the argument is written: `--namespace NS`, `-n NS`; a positional by its name; a switch alone."""
    metavar = action.metavar if isinstance(action.metavar, str) else None
    if not action.option_strings:
        return f"`{metavar or action.dest}`"
    takes_value = action.nargs != 0
    value = f" {metavar or action.dest.upper()}" if takes_value else ""
    return ", ".join(f"`{option}{value}`" for option in action.option_strings)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text with `%(default)s` and friends filled in, as `--help` shows it."""
    formatter = parser._get_formatter()
    return formatter._expand_help(action) if action.help else ""


def render(root: argparse.ArgumentParser | None = None) -> str:
    """The page for `root` (default: the `helmrelease` parser)."""
    temporary = tempfile.gettempdir()
    out = [
        f"<!-- Generated from helmrelease.cli by `{REGENERATE}` (tests/support/cli_reference.py). Do not edit. -->",
        "",
        "# `helmrelease` command reference",
        "",
        "Every command and argument, as `--help` describes it. `helmrelease run` also reads each flag from the "
        "`HELMRELEASE_*` variable named with it (a flag wins over its variable, an empty variable counts as "
        "unset); a bad value stops it with exit status 2 and one line naming the flag or variable.",
    ]
    for path, parser in commands(root or build_parser()):
        out += ["", f"## `{' '.join(('helmrelease', *path))}`", ""]
        if parser.description:
            out += [_cell(parser.description), ""]
        rows = []
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                rows += [
                    f"| `{name}` | {_cell(choice.help or '')} |"
                    for choice in action._choices_actions
                    for name in [choice.dest]
                ]
                continue
            rows.append(
                f"| {_pipes(_invocation(action))} | {_cell(_help(parser, action).replace(temporary, '$TMPDIR'))} |"
            )
        if rows:
            out += ["| argument | meaning |", "|---|---|", *rows]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is out of date")
    options = parser.parse_args(argv)
    text = render()
    if options.check:
        if not REFERENCE_PATH.exists() or REFERENCE_PATH.read_text() != text:
            print(
                f"{REFERENCE_PATH.relative_to(REPO_ROOT)} is out of date: run `{REGENERATE}`", file=sys.stderr
            )
            return 1
        return 0
    REFERENCE_PATH.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE_PATH.write_text(text)
    print(f"wrote {REFERENCE_PATH.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
