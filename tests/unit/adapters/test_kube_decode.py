"""Decoding Helm's release storage format without helm."""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from helmrelease.adapters.kube import decode_release


def _secret_value(release: dict[str, object], *, compress: bool = True) -> str:
    raw = json.dumps(release).encode()
    if compress:
        raw = gzip.compress(raw)
    # Helm base64-encodes the (gzipped) JSON; the Secret API base64-encodes that again.
    return base64.b64encode(base64.b64encode(raw)).decode()


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_decode_release(compress: bool) -> None:
    release = {
        "name": "web",
        "version": 4,
        "info": {"status": "deployed"},
        "manifest": "---\nkind: ConfigMap\n",
    }
    assert decode_release(_secret_value(release, compress=compress)) == release
