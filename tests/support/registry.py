"""A real OCI registry (distribution) on loopback, and a pusher that writes synthetic images through its HTTP API.

Pushed images are real OCI artifacts: a config blob with the chosen `created` time, one gzip layer, a manifest, and
optionally an image index over several platforms. Tag listing and creation times seen by the operator are therefore
the registry's own answers.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import requests
from prometheus_client import CollectorRegistry

from tests.support.procs import Process, binary, free_port

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class Registry:
    """A running registry: `host` is `127.0.0.1:<port>` as it appears in image references."""

    host: str
    process: Process
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username and self.password else None

    def dockerconfigjson(self) -> str:
        """The `.dockerconfigjson` a kubernetes.io/dockerconfigjson Secret holds for this registry."""
        assert self.username
        assert self.password
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return json.dumps(
            {"auths": {self.host: {"username": self.username, "password": self.password, "auth": token}}}
        )

    def stop(self) -> None:
        self.process.stop()


@dataclass(frozen=True)
class Notify:
    """A `notifications.endpoints` entry: the registry POSTs its event envelopes to `url` with `Authorization`.

    By default blob events (`application/octet-stream`) and pulls are not sent, as the registry's documented
    example configures it: each pushed tag is then one request, its manifest's.
    """

    url: str
    authorization: str | None = None
    name: str = "sidecar"
    ignore_media_types: tuple[str, ...] = ("application/octet-stream",)
    ignore_actions: tuple[str, ...] = ("pull",)

    def config(self) -> str:
        headers = (
            f"      headers:\n        Authorization: [{json.dumps(self.authorization)}]\n"
            if self.authorization
            else ""
        )
        ignore = (
            f"      ignore:\n        mediatypes: {json.dumps(list(self.ignore_media_types))}\n"
            f"        actions: {json.dumps(list(self.ignore_actions))}\n"
        )
        # A short backoff: a refused delivery is retried soon (and forever), as the registry does.
        return (
            f"    - name: {self.name}\n      url: {self.url}\n{headers}{ignore}"
            "      timeout: 2s\n      threshold: 3\n      backoff: 1s\n"
        )


@dataclass(frozen=True)
class TokenAuth:
    """`auth: token`: the registry sends clients to `realm` for a JWT issued by `issuer` for `service`, and
    trusts the tokens whose `x5c` chain leads to a certificate in `rootcertbundle`."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path

    def config(self) -> str:
        return (
            f"auth:\n  token:\n    realm: {self.realm}\n    service: {self.service}\n"
            f"    issuer: {self.issuer}\n    rootcertbundle: {self.rootcertbundle}\n"
        )


def start(
    workdir: Path,
    *,
    username: str | None = None,
    password: str | None = None,
    notify: Sequence[Notify] = (),
    port: int | None = None,
    token: TokenAuth | None = None,
    storage: Path | None = None,
) -> Registry:
    """Run `registry serve` with filesystem storage, deletes enabled, and htpasswd auth when credentials are given.

    `notify`: endpoints the registry sends its notifications to (its own `notifications.endpoints`). `port`: listen
    there (to restart a registry over the same storage under the same name). `token`: bearer token auth instead.
    `storage`: the storage directory (another registry's, to serve its images under other auth).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    notifications = ""
    if notify:
        notifications = "notifications:\n  endpoints:\n" + "".join(endpoint.config() for endpoint in notify)
    auth = ""
    if username and password:
        htpasswd = workdir / "htpasswd"
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        htpasswd.write_text(f"{username}:{hashed}\n")
        auth = f"auth:\n  htpasswd:\n    realm: helmrelease-test\n    path: {htpasswd}\n"
    if token is not None:
        auth = token.config()
    config = workdir / "config.yml"
    config.write_text(
        f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage or workdir / "data"}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: helmrelease-test-only
{auth}{notifications}"""
    )
    process = Process(
        "registry", [binary("registry"), "serve", str(config)], workdir / "registry.log"
    ).start()
    registry = Registry(f"127.0.0.1:{port}", process, username, password)
    process.wait_until(
        lambda: requests.get(f"{registry.url}/v2/", timeout=2).status_code in (200, 401), 30, "serving /v2/"
    )
    return registry


class ImagePusher:
    """Pushes synthetic single- or multi-platform images under chosen tags with chosen creation times."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.session = requests.Session()
        if registry.auth:
            self.session.auth = registry.auth

    def _blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        base = f"{self.registry.url}/v2/{repository}/blobs"
        if self.session.head(f"{base}/{digest}", timeout=10).status_code == 200:
            return digest
        start = self.session.post(f"{base}/uploads/", timeout=10)
        start.raise_for_status()
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.registry.url + location
        separator = "&" if "?" in location else "?"
        put = self.session.put(
            f"{location}{separator}digest={digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        put.raise_for_status()
        return digest

    def _manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        response = self.session.put(
            f"{self.registry.url}/v2/{repository}/manifests/{reference}",
            data=body,
            headers={"Content-Type": media_type},
            timeout=10,
        )
        response.raise_for_status()
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def _image_manifest(self, repository: str, created: dt.datetime, os_: str, arch: str, seed: str) -> bytes:
        layer = gzip.compress(f"{repository}:{seed}:{os_}/{arch}".encode(), mtime=0)
        layer_digest = self._blob(repository, layer)
        config = json.dumps(
            {
                "created": created.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
                "architecture": arch,
                "os": os_,
                "config": {"Labels": {"org.opencontainers.image.created": created.isoformat()}},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
            },
            sort_keys=True,
        ).encode()
        config_digest = self._blob(repository, config)
        return json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
            },
            sort_keys=True,
        ).encode()

    def push(
        self,
        repository: str,
        tag: str,
        created: dt.datetime | None = None,
        platforms: tuple[tuple[str, str], ...] = (("linux", "amd64"),),
    ) -> str:
        """Push `repository:tag`; more than one platform makes an image index. Returns the top-level digest."""
        created = created or dt.datetime.now(dt.UTC)
        if len(platforms) == 1:
            os_, arch = platforms[0]
            manifest = self._image_manifest(repository, created, os_, arch, tag)
            return self._manifest(repository, tag, manifest, OCI_MANIFEST)
        entries = []
        for os_, arch in platforms:
            manifest = self._image_manifest(repository, created, os_, arch, tag)
            digest = self._manifest(
                repository, "sha256:" + hashlib.sha256(manifest).hexdigest(), manifest, OCI_MANIFEST
            )
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(manifest),
                    "platform": {"os": os_, "architecture": arch},
                }
            )
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, sort_keys=True
        ).encode()
        return self._manifest(repository, tag, index, OCI_INDEX)

    def tags(self, repository: str) -> list[str]:
        response = self.session.get(f"{self.registry.url}/v2/{repository}/tags/list", timeout=10)
        response.raise_for_status()
        return list(response.json().get("tags") or [])


def utc(minutes_ago: float) -> dt.datetime:
    """A creation time `minutes_ago` before now, for ordering pushed images."""
    return dt.datetime.fromtimestamp(time.time() - minutes_ago * 60, dt.UTC)


def metric_samples(
    metrics: CollectorRegistry, name: str, labels: tuple[str, ...]
) -> Counter[tuple[str, ...]]:
    """Sum of the samples of ``name`` by ``labels``: how tests and benchmarks count registry requests
    (``helmrelease_registry_requests_total`` by kind and code, as the sidecar's /metrics shows them)."""
    counts: Counter[tuple[str, ...]] = Counter()
    for metric in metrics.collect():
        for sample in metric.samples:
            if sample.name == name:
                counts[tuple(sample.labels[label] for label in labels)] += sample.value
    return counts


def requests_by_kind(metrics: CollectorRegistry, host: str | None = None) -> Counter[str]:
    """Registry requests made so far by kind (tags, manifest, blob, token), of one registry or all."""
    counts: Counter[str] = Counter()
    for (registry, kind), value in metric_samples(
        metrics, "helmrelease_registry_requests_total", ("registry", "kind")
    ).items():
        if host is None or registry == host:
            counts[kind] += int(value)
    return counts
