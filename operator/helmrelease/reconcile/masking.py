"""Mask the values that came from Secrets in text that helm wrote, before it is written anywhere.

The API server quotes a rejected value back (`metadata.labels: Invalid value: "<value>"`) and helm passes that on, so
a value from `valuesFrom.secretKeyRef` or `valueFileSecrets` would otherwise reach a condition, an Event and a log
line. Every scalar leaf of those layers is masked, in each spelling it can take on the way there: as it is, line by
line (a PEM block), quoted the way Go and JSON quote strings (`\\"`, `\\n`, `\\u003c`), and base64 (a chart that
`b64enc`s it). Numbers count too: YAML reads `123456` as an int, and helm prints it without quotes.

A value shorter than `MIN_SECRET_LENGTH` characters is not masked: masking `true`, `80` or `prod` would garble every
message that contains those words, and a secret that short protects nothing anyway.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Final

#: The shortest value that is masked (see the module docstring for why short ones are not).
MIN_SECRET_LENGTH: Final = 6
#: What a masked value reads as (the same mask helm's URL credentials get in adapters.helm.trim_stderr).
MASK: Final = "***"

_GO_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def secret_strings(values: object) -> set[str]:
    """The scalar leaves of a values tree that are long enough to mask, as text (keys are not secrets)."""
    found: set[str] = set()
    pending: list[object] = [values]
    while pending:
        value = pending.pop()
        if isinstance(value, Mapping):
            pending.extend(value.values())
        elif isinstance(value, list | tuple):
            pending.extend(value)
        elif isinstance(value, bool) or value is None:
            continue  # true/false/null: the same in every values file, and never a secret
        elif isinstance(value, int | float | str):
            for text in _scalar_texts(value):
                if len(text.strip()) >= MIN_SECRET_LENGTH:
                    found.add(text)
    return found


def _scalar_texts(value: int | float | str) -> set[str]:
    if isinstance(value, str):
        return {value}
    number = float(value)
    texts = {repr(value), go_float(number)}
    if number.is_integer():
        texts.add(str(int(number)))
    return texts


def go_float(number: float) -> str:
    """`number` as Go prints a float64 with `%v` (helm's templates: every number in values is one): the shortest
    digits, with an exponent from 1e+06 up and below 1e-04, so `1234567` renders as `1.234567e+06`."""
    if number == 0 or number != number or number in (float("inf"), float("-inf")):
        return repr(number)
    digits = repr(abs(number)).lower().split("e")[0].replace(".", "").strip("0") or "0"
    exponent = Decimal(repr(abs(number))).adjusted()
    if exponent < -4 or exponent >= 6:
        return f"{number:.{len(digits) - 1}e}"
    return str(int(number)) if number.is_integer() else repr(number)


def spellings(secret: str) -> set[str]:
    """The forms `secret` can take in helm's output; each at least as long as the part of `secret` it masks."""
    parts = {secret, secret.strip()}
    parts |= {line.strip() for line in secret.splitlines() if len(line.strip()) >= MIN_SECRET_LENGTH}
    forms: set[str] = set()
    for part in parts:
        if len(part) < MIN_SECRET_LENGTH:
            continue
        escaped = json.dumps(part, ensure_ascii=False)[1:-1]
        forms |= {
            part,
            escaped,
            json.dumps(part)[1:-1],  # \uXXXX for anything beyond ASCII
            # Go's encoding/json keeps HTML-significant characters out of JSON.
            escaped.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"),
            go_quote(part),
            part.replace("'", "''"),  # YAML's single-quoted style (toYaml)
            base64.b64encode(part.encode()).decode(),
        }
    return forms


def go_quote(text: str) -> str:
    """`text` as Go's strconv.Quote (and so `%q`, which the API server's field errors use) writes it, unquoted."""
    out: list[str] = []
    for char in text:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        elif not char.isprintable():
            out.append(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")
        else:
            out.append(char)
    return "".join(out)


class Masker:
    """Replaces every spelling of every secret value of `layers` in a text by `MASK`; without any, the text as it is.

    The pattern is built on first use: a pass that runs no helm, or whose helm succeeds, never pays for it.
    """

    def __init__(self, layers: Iterable[object] = ()) -> None:
        self._layers = tuple(layers)

    def __call__(self, text: str) -> str:
        if self.pattern is None or not text:
            return text
        return self.pattern.sub(MASK, text)

    @functools.cached_property
    def pattern(self) -> re.Pattern[str] | None:
        forms: set[str] = set()
        for layer in self._layers:
            for secret in secret_strings(layer):
                forms |= spellings(secret)
        if not forms:
            return None
        # Longest first, so a value that contains another is masked whole.
        alternatives = sorted(forms, key=lambda form: (-len(form), form))
        return re.compile("|".join(re.escape(form) for form in alternatives))


def masker_for(layers: Iterable[object]) -> Masker:
    """A masker for the values of `layers` (the parsed values of every Secret-sourced values layer)."""
    return Masker(layers)
