"""One settings model per process, read from flags and ``HELMRELEASE_*`` variables through the same validators.

A model is a pydantic ``BaseSettings`` whose fields carry their default (written once, here or in the inner
layer's settings object they feed), their validator (an ``argtypes`` type) and their flag (``Flag`` metadata).
The parser is built from the fields, with every flag defaulting to "not given", so the model sees only what the
user wrote on the command line; pydantic-settings fills the rest from ``HELMRELEASE_<FIELD>`` (an empty
variable counts as unset) and then the default. A flag wins over its variable.

The model is built only for the subcommand that runs, so a bad variable another subcommand reads breaks
nothing; a bad value becomes ``SettingsError``, one line per value naming the flag or the variable.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "HELMRELEASE_"

ArgumentContainer = argparse.ArgumentParser | argparse._ArgumentGroup


@dataclass(frozen=True)
class Flag:
    """How a settings field is written on the command line. ``repeatable`` flags collect a list (their
    variable holds it comma-separated); ``switch`` flags take no value and turn the setting on."""

    names: tuple[str, ...]
    help: str
    metavar: str | None = None
    repeatable: bool = False
    switch: bool = False


def flag(*names: str, help: str, metavar: str | None = None, repeatable: bool = False) -> Flag:
    return Flag(names, help, metavar, repeatable)


def switch(*names: str, help: str) -> Flag:
    return Flag(names, help, switch=True)


class SettingsError(Exception):
    """Values that do not validate, one line each: ``--workers: must be a positive integer, not '0'``."""


class CliSettings(BaseSettings):
    """Base of the per-process models: environment and flags only (no dotenv or secrets files), frozen."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable of field ``name``."""
        return ENV_PREFIX + name.upper()

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Every variable this model reads, by field."""
        return {name: cls.variable(name) for name in cls.model_fields}

    @classmethod
    def flag(cls, name: str) -> Flag:
        [found] = [item for item in cls.model_fields[name].metadata if isinstance(item, Flag)]
        return found

    @classmethod
    def add_arguments(
        cls, parser: argparse.ArgumentParser, groups: Mapping[str, ArgumentContainer] | None = None
    ) -> None:
        """A flag per field, in field order; ``groups`` puts some into (mutually exclusive) groups."""
        for name, field in cls.model_fields.items():
            container = (groups or {}).get(name, parser)
            spec = cls.flag(name)
            options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
            if spec.switch:
                options["action"] = "store_true"
            else:
                options["metavar"] = spec.metavar
                if spec.repeatable:
                    options["action"] = "append"
            container.add_argument(*spec.names, help=_help(spec, cls.variable(name), field), **options)

    @classmethod
    def given(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The fields set on the command line (the parser's flags default to absent)."""
        return {name: getattr(args, name) for name in cls.model_fields if hasattr(args, name)}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """The settings from the flags given, then the environment, then the defaults; raises ``SettingsError``."""
        return cls.load(cls.given(args))

    @classmethod
    def load(cls, flags: Mapping[str, Any]) -> Self:
        """The settings from ``flags`` (by field), then the environment, then the defaults."""
        try:
            return cls(**flags)
        except ValidationError as error:
            raise SettingsError(
                "\n".join(_describe(cls, problem, flags) for problem in error.errors())
            ) from None


def _describe(model: type[CliSettings], problem: Any, flags: Mapping[str, Any]) -> str:
    name = str(problem["loc"][0]) if problem["loc"] else ""
    if name in model.model_fields:
        source = model.flag(name).names[0] if name in flags else model.variable(name)
    else:
        source = name
    cause = problem.get("ctx", {}).get("error")
    text = str(cause) if cause is not None else str(problem["msg"])
    return f"{source}: {text}" if source else text  # a check across fields names its flags itself


def _help(spec: Flag, variable: str, field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    shown = _shown(default)
    details = [f"env {variable}"] if shown is None else [f"default {shown}", f"env {variable}"]
    return f"{spec.help} ({'; '.join(details)})".replace("%", "%%")


def _shown(default: object) -> str | None:
    """A default as a person would write it, or None when it is "off" or "none" (the help says what)."""
    if default is None or default is False or default == ():
        return None
    if isinstance(default, tuple):
        return ",".join(str(item) for item in default)
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default) if not isinstance(default, Path) else default.as_posix()
