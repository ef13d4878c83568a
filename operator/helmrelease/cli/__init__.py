"""The ``helmrelease`` command line: each subcommand group lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from helmrelease import __version__
from helmrelease.cli import diff, image_policy, images, operate, run
from helmrelease.cli.settings import CliSettings, SettingsError

#: Exit status of a usage error, as argparse uses it: a bad flag, a bad HELMRELEASE_* variable.
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Assemble the parser from the subcommand modules (each exposes ``register(subparsers)``)."""
    parser = argparse.ArgumentParser(
        prog="helmrelease",
        description="HelmRelease operator (helm.fluxcd.io/v1) and image-policy automation.",
    )
    parser.add_argument("--version", action="version", version=f"helmrelease {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (run, images, image_policy, operate, diff):
        module.register(subparsers)
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line, with ``settings`` for a subcommand that has a settings model (``settings_model``).

    Only the chosen subcommand's settings are read, so a bad variable another subcommand reads breaks nothing.
    A bad value exits with status 2 and one line per value, naming the flag or the variable, as argparse does
    for a bad flag.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    model: type[CliSettings] | None = getattr(args, "settings_model", None)
    if model is not None:
        try:
            args.settings = model.from_args(args)
        except SettingsError as error:
            lines = "".join(f"{parser.prog}: error: {line}\n" for line in str(error).splitlines())
            parser.exit(EXIT_USAGE, lines)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; each returns its own exit code."""
    args = parse(argv)
    handler = args.handler
    code: int = handler(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
