"""Run the real helm binary (v4 as `helm`, v3 as `helm3`) with isolated cache/config/data homes."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.procs import binary


@dataclass(frozen=True)
class Helm:
    """One helm binary bound to a kubeconfig and private HELM_*_HOME directories."""

    executable: str
    home: Path
    kubeconfig: Path | None = None

    @classmethod
    def create(cls, name: str, home: Path, kubeconfig: Path | None = None) -> Helm:
        for sub in ("cache", "config", "data"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        return cls(binary(name), home, kubeconfig)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HELM_CACHE_HOME=str(self.home / "cache"),
            HELM_CONFIG_HOME=str(self.home / "config"),
            HELM_DATA_HOME=str(self.home / "data"),
        )
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.executable, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--output", "json").stdout)

    def version(self) -> str:
        return self.run("version", "--template", "{{.Version}}").stdout.strip()
