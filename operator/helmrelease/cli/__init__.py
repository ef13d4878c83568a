"""The ``helmrelease`` command line: each subcommand group lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from helmrelease import __version__
from helmrelease.cli import image_policy, images, run


def build_parser() -> argparse.ArgumentParser:
    """Assemble the parser from the subcommand modules (each exposes ``register(subparsers)``)."""
    parser = argparse.ArgumentParser(
        prog="helmrelease",
        description="HelmRelease operator (helm.fluxcd.io/v1) and image-policy automation.",
    )
    parser.add_argument("--version", action="version", version=f"helmrelease {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (run, images, image_policy):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; each returns its own exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = args.handler
    code: int = handler(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
