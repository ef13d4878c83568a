"""argparse value types shared by the subcommands, so a bad flag fails at parse time with one wording."""

from __future__ import annotations

import argparse


def positive_seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def log_level(text: str) -> str:
    """A level `logging` knows (DEBUG, INFO, WARNING, ERROR, CRITICAL), any case."""
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise argparse.ArgumentTypeError(
            f"unknown log level {text!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return level
