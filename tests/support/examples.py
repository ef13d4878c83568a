"""The example manifests (manifests/examples) made runnable here, and a git repository that serves a chart."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.charts import CHARTS_DIR
from tests.support.procs import REPO_ROOT

EXAMPLES_DIR = REPO_ROOT / "manifests" / "examples"
# Placeholders the examples use for what each environment provides.
CHART_REPOSITORY = "https://charts.example.com/"
OCI_BASE = "oci://registry.example.com/charts"
GIT_URL = "https://git.example.com/platform/charts.git"
#: Namespaces the examples install into besides their own.
TARGET_NAMESPACES = ("app-git",)


def render_examples(*, chart_repository: str, oci_base: str, git_url: str) -> str:
    """Every example, as one multi-document YAML, with the placeholders replaced."""
    documents = []
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        text = path.read_text()
        text = (
            text.replace(CHART_REPOSITORY, chart_repository)
            .replace(OCI_BASE, oci_base)
            .replace(GIT_URL, git_url)
        )
        documents.append(text)
    return "\n---\n".join(documents)


def _git(*args: str, cwd: Path) -> str:
    env = {
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@localhost",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@localhost",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(cwd),
    }
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def git_chart_repository(directory: Path, *, branch: str = "main") -> tuple[str, Path]:
    """A bare repository holding tests/charts/app at charts/app on `branch`; returns (file:// URL, work tree)."""
    bare, work = directory / "charts.git", directory / "work"
    bare.mkdir(parents=True)
    _git("init", "--bare", "--initial-branch", branch, str(bare), cwd=directory)
    _git("clone", str(bare), str(work), cwd=directory)
    shutil.copytree(CHARTS_DIR / "app", work / "charts" / "app")
    (work / "README.md").write_text("charts for the helmrelease-operator tests\n")
    _git("add", "-A", cwd=work)
    _git("commit", "-m", "Add the app chart", cwd=work)
    _git("push", "origin", f"HEAD:{branch}", cwd=work)
    return f"file://{bare}", work


def commit_and_push(work: Path, message: str, branch: str = "main") -> str:
    """Commit everything in the work tree and push it; returns the new commit."""
    _git("add", "-A", cwd=work)
    _git("commit", "-m", message, cwd=work)
    _git("push", "origin", f"HEAD:{branch}", cwd=work)
    return _git("rev-parse", "HEAD", cwd=work)
