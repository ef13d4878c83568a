"""``helmrelease images ...``: offline image tooling for users and CI pipelines."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``images`` command group."""
    parser: argparse.ArgumentParser = subparsers.add_parser("images", help="find and update images in HelmReleases")
    sub = parser.add_subparsers(dest="images_command", metavar="SUBCOMMAND", required=True)
    del sub
