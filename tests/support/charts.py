"""Serve the test charts: a Helm chart repository (index.yaml + packages over HTTP) and OCI charts in the registry."""

from __future__ import annotations

import base64
import functools
import shutil
import ssl
import threading
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ruamel.yaml import YAML

from tests.support.helmtool import Helm
from tests.support.pki import Pki
from tests.support.procs import REPO_ROOT
from tests.support.registry import Registry

CHARTS_DIR = REPO_ROOT / "tests" / "charts"
# Every chart is published at these versions, so upgrades by chart version can be tested.
VERSIONS = ("0.1.0", "0.2.0")


def package(helm: Helm, chart: str, version: str, destination: Path) -> Path:
    """`helm package` a copy of tests/charts/<chart> with Chart.yaml's version set to `version`."""
    work = destination / ".src" / f"{chart}-{version}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(CHARTS_DIR / chart, work)
    yaml = YAML()
    chart_file = work / "Chart.yaml"
    meta = yaml.load(chart_file)
    meta["version"] = version
    yaml.dump(meta, chart_file)
    helm.run("package", str(work), "--destination", str(destination))
    return destination / f"{chart}-{version}.tgz"


class _Handler(SimpleHTTPRequestHandler):
    """Static files with optional basic auth; quiet, since test logs should show the operator, not the server."""

    expected_auth: str | None = None

    def do_GET(self) -> None:
        if self.expected_auth and self.headers.get("Authorization") != self.expected_auth:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="charts"')
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class ChartRepository:
    """A Helm HTTP chart repository on loopback; `url` ends with a slash as `helm repo add` writes it."""

    directory: Path
    url: str
    server: ThreadingHTTPServer
    thread: threading.Thread
    username: str | None = None
    password: str | None = None
    charts: dict[str, list[str]] = field(default_factory=dict)

    def publish(self, helm: Helm, chart: str, version: str) -> Path:
        """Package another chart version and regenerate index.yaml."""
        path = package(helm, chart, version, self.directory)
        helm.run("repo", "index", str(self.directory), "--url", self.url.rstrip("/"))
        self.charts.setdefault(chart, []).append(version)
        return path

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve_repository(
    helm: Helm,
    directory: Path,
    *,
    username: str | None = None,
    password: str | None = None,
    tls: Pki | None = None,
) -> ChartRepository:
    """Package every test chart at every version in VERSIONS and serve them (over HTTPS with `tls`'s serving
    certificate, for 127.0.0.1, signed by its own CA)."""
    repo = serve_directory(directory, username=username, password=password, tls=tls)
    url = repo.url
    for chart in sorted(p.name for p in CHARTS_DIR.iterdir() if (p / "Chart.yaml").exists()):
        for version in VERSIONS:
            package(helm, chart, version, directory)
            repo.charts.setdefault(chart, []).append(version)
    helm.run("repo", "index", str(directory), "--url", url.rstrip("/"))
    return repo


def serve_directory(
    directory: Path,
    *,
    username: str | None = None,
    password: str | None = None,
    tls: Pki | None = None,
) -> ChartRepository:
    """Serve `directory` as it is (its index.yaml and packages) over HTTP, or HTTPS with `tls`."""
    directory.mkdir(parents=True, exist_ok=True)
    auth = None
    if username and password:
        auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    handler = type("Handler", (_Handler,), {"expected_auth": auth})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls.serving_cert), str(tls.serving_key))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    url = f"{scheme}://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, name="chart-repo", daemon=True)
    thread.start()
    return ChartRepository(directory, url, server, thread, username, password)


def push_oci_charts(helm: Helm, registry: Registry, packages: Path, namespace: str = "charts") -> str:
    """Push every packaged chart in `packages` to `oci://<registry>/<namespace>`; returns that base URL."""
    base = f"oci://{registry.host}/{namespace}"
    if registry.auth:
        helm.run(
            "registry",
            "login",
            registry.host,
            "--username",
            registry.auth[0],
            "--password",
            registry.auth[1],
            "--plain-http",
        )
    for tgz in sorted(packages.glob("*.tgz")):
        helm.run("push", str(tgz), base, "--plain-http")
    return base
