"""Run the kubectl built by `make tools` against a kubeconfig."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.procs import binary


def kubectl(kubeconfig: Path, *args: str, input_text: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [binary("kubectl"), "--kubeconfig", str(kubeconfig), *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout
