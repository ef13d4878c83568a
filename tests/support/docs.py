"""The Markdown of docs/ (and the README) as the doc tests read it: fenced code blocks, tables, links, headings.

Only the subset of CommonMark these files use: fences of three or more backticks (indented inside list items
too), GitHub tables, inline links. Both tests/unit/docs/test_docs.py and the integration test that sends the
examples to a real API server read the files through this module, so they check the same blocks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests.support.procs import REPO_ROOT

DOCS_DIR = REPO_ROOT / "docs"
#: The Markdown files whose examples must be valid: docs/, the top-level README and the deployment README.
MARKDOWN = (*sorted(DOCS_DIR.rglob("*.md")), REPO_ROOT / "README.md", REPO_ROOT / "manifests" / "README.md")
YAML_LANGUAGES = frozenset({"yaml", "yml"})

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")


@dataclass(frozen=True)
class Block:
    """A fenced code block: the file, the line its fence opens on, its language and its text."""

    path: Path
    line: int
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def blocks(path: Path) -> Iterator[Block]:
    """The fenced code blocks of a Markdown file, their indentation (inside a list item) removed."""
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body: list[str] = []
        start = index + 1
        index += 1
        while index < len(lines) and lines[index].strip() != fence:
            body.append(lines[index][indent:] if lines[index][:indent].strip() == "" else lines[index])
            index += 1
        yield Block(path, start, opening["info"].strip().split(" ")[0].lower(), "\n".join(body) + "\n")
        index += 1


def yaml_blocks() -> list[Block]:
    return [block for path in MARKDOWN for block in blocks(path) if block.language in YAML_LANGUAGES]


def documents(block: Block) -> list[Any]:
    """The YAML documents of a block (a block may hold several, separated by `---`)."""
    return [document for document in YAML(typ="safe").load_all(block.text) if document is not None]


def helmrelease_examples() -> list[tuple[str, dict[str, Any]]]:
    """(where, object) for every HelmRelease in a YAML block of the docs."""
    return [
        (f"{block.where}#{index}", document)
        for block in yaml_blocks()
        for index, document in enumerate(documents(block))
        if isinstance(document, dict)
        and document.get("apiVersion") == "helm.fluxcd.io/v1"
        and document.get("kind") == "HelmRelease"
    ]


def prose_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of the lines outside fenced blocks."""
    inside: str | None = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fence = _FENCE.match(line)
        if fence is not None and (inside is None or line.strip() == inside):
            inside = fence["fence"] if inside is None else None
            continue
        if inside is None:
            yield number, line


def table_rows(path: Path, heading: str) -> list[list[str]]:
    """The cells of the first table after `heading` (a heading line's text without the #s), header excluded."""
    rows: list[list[str]] = []
    found = False
    for _, line in prose_lines(path):
        if line.startswith("#"):
            if found and rows:
                break
            found = line.lstrip("#").strip() == heading
            continue
        if found and line.startswith("|"):
            cells = [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(cell) <= {"-", ":"} for cell in cells):
                rows.append(cells)
        elif found and rows:
            break
    return rows[1:]


def code_spans(text: str) -> list[str]:
    """The contents of the `code spans` in a piece of Markdown, in order."""
    return [span.strip("`").strip() for span in _CODE_SPAN.findall(text)]


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line, target) of the inline links outside code."""
    for number, line in prose_lines(path):
        for match in _LINK.finditer(_CODE_SPAN.sub("", line)):
            yield number, match["target"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = _CODE_SPAN.sub(lambda span: span.group(0).strip("`"), heading.strip().lstrip("#").strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated heading gets -1, -2 ..., as on GitHub)."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for _, line in prose_lines(path):
        if not re.match(r"^#{1,6} ", line):
            continue
        base = slug(line)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result
