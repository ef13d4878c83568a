"""A release too large for Helm's Secret storage: its own error class, with a message that says what to do."""

from __future__ import annotations

import pytest

from helmrelease.adapters import helm

# helm v4 and v3 against kube-apiserver 1.37 (and the older apiserver wording), install and upgrade.
SAMPLES = [
    'Error: INSTALLATION FAILED: create: failed to create: Secret "sh.helm.release.v1.apps-huge.v1" is invalid: '
    "data: Too long: may not be more than 1048576 bytes",
    'Error: UPGRADE FAILED: create: failed to create: Secret "sh.helm.release.v1.apps-huge.v2" is invalid: '
    "data: Too long: must have at most 1048576 bytes",
]


@pytest.mark.parametrize("stderr", SAMPLES)
def test_an_oversized_release_secret_is_release_too_large(stderr: str) -> None:
    error = helm.error_from_stderr("install", stderr, 1)
    assert type(error) is helm.ReleaseTooLarge
    assert str(error) == f"install: {helm.RELEASE_TOO_LARGE}: {stderr}"


def test_other_invalid_secrets_stay_invalid_resources() -> None:
    stderr = 'Error: UPGRADE FAILED: Secret "app-config" is invalid: data: Too long: may not be more than 1048576 bytes'
    assert helm.classify(stderr) is helm.InvalidResource
