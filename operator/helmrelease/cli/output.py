"""How the command line prints records: an aligned table for people, ``-o json`` or ``-o yaml`` for scripts.

Records are plain dicts with stable snake_case keys (the README's CLI section lists them per command); the
table shows some of them through columns. One printer for every command, so ``images list`` and ``get`` align
their columns the same way.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from typing import Any, Final

from ruamel.yaml import YAML

OUTPUTS: Final = ("table", "json", "yaml")
#: What a table shows for a field without a value.
NONE: Final = "-"

Column = tuple[str, Callable[[dict[str, Any]], object]]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns, as ``kubectl get`` prints them: three spaces apart, the last one not padded."""
    all_rows = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[index]) for row in all_rows) for index in range(len(headers) - 1)]
    return "\n".join(
        "   ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in all_rows
    )


def shown(value: object) -> str:
    """A cell: ``-`` for nothing, ``true``/``false`` for booleans (as YAML and kubectl write them)."""
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def records_table(records: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    return table(
        [header for header, _ in columns], [[shown(cell(r)) for _, cell in columns] for r in records]
    )


def truncate(text: str, limit: int) -> str:
    """``text`` on one line (runs of whitespace and line breaks as one space), cut to ``limit`` characters with an
    ellipsis: a table row stays one line."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _literal_blocks(representer: Any, data: str) -> Any:
    """Multi-line strings as ``|`` blocks, so a diff of a ConfigMap's file shows the line that changed."""
    style = "|" if "\n" in data and not any(c in data for c in "\r\t") and data == data.rstrip(" ") else None
    return representer.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def yaml_dumper() -> YAML:
    """Block-style YAML in the document's own key order, multi-line strings as literal blocks."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.allow_unicode = True
    yaml.width = 4096
    yaml.representer.add_representer(str, _literal_blocks)
    return yaml


def dump_yaml(document: object) -> str:
    stream = io.StringIO()
    yaml_dumper().dump(document, stream)
    return stream.getvalue()


def render(records: Any, output: str, as_table: Callable[[], str]) -> str:
    """``records`` as the ``-o`` format asks; ``as_table`` builds the table only when it is wanted."""
    if output == "json":
        return json.dumps(records, indent=2, ensure_ascii=False)
    if output == "yaml":
        return dump_yaml(records).rstrip("\n")
    return as_table()
