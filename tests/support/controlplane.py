"""A real Kubernetes control plane on loopback: etcd + kube-apiserver with RBAC, certificates and a kubeconfig.

There is no kubelet or controller-manager: objects are stored and validated for real, nothing runs. Tests that need
Pods to finish (helm test) use `tests.support.nodesim`, which plays the node's part in test namespaces only.
"""

from __future__ import annotations

import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support import pki as pki_mod
from tests.support.procs import Process, binary, free_port


@dataclass
class ControlPlane:
    """What a test needs to talk to the control plane, and the processes to stop."""

    server: str
    kubeconfig: Path
    pki: pki_mod.Pki
    etcd: Process
    apiserver: Process
    started_in: float

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def get(self, path: str) -> str:
        """A raw authenticated GET (readiness checks, debugging)."""
        with urllib.request.urlopen(
            f"{self.server}{path}", context=self.ssl_context(), timeout=5
        ) as response:
            body: bytes = response.read()
            return body.decode()

    def stop(self) -> None:
        self.apiserver.stop()
        self.etcd.stop()


def write_kubeconfig(path: Path, server: str, pki: pki_mod.Pki, context: str = "helmrelease-test") -> None:
    """A kubeconfig for the admin client certificate; the context name marks it as a test cluster."""
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: {context}
  cluster:
    server: {server}
    certificate-authority: {pki.ca_cert}
users:
- name: {context}-admin
  user:
    client-certificate: {pki.admin_cert}
    client-key: {pki.admin_key}
contexts:
- name: {context}
  context:
    cluster: {context}
    user: {context}-admin
current-context: {context}
"""
    )
    path.chmod(0o600)


def start(workdir: Path, timeout: float = 60.0) -> ControlPlane:
    """Start etcd and kube-apiserver on free loopback ports and wait for /readyz."""
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    certs = pki_mod.generate(workdir / "pki")
    etcd_client, etcd_peer, api_port = free_port(), free_port(), free_port()

    etcd = Process(
        "etcd",
        [
            binary("etcd"),
            "--name=test",
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=test=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",  # a test cluster: durability across power loss is not worth the latency
            "--log-level=warn",
            "--quota-backend-bytes=4294967296",
        ],
        workdir / "etcd.log",
    ).start()

    server = f"https://127.0.0.1:{api_port}"
    apiserver = Process(
        "kube-apiserver",
        [
            binary("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",  # no kubernetes Service endpoints for a loopback-only server
            f"--secure-port={api_port}",
            f"--cert-dir={workdir / 'apiserver-certs'}",
            f"--tls-cert-file={certs.serving_cert}",
            f"--tls-private-key-file={certs.serving_key}",
            f"--client-ca-file={certs.ca_cert}",
            f"--service-account-key-file={certs.sa_public_key}",
            f"--service-account-signing-key-file={certs.sa_private_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--authorization-mode=RBAC",
            # 65,534 Services: the scale benchmark installs 1000 releases of a chart with a Service each (a /24
            # holds 254, and the 255th install fails with "range is full").
            "--service-cluster-ip-range=10.0.0.0/16",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",  # one client at a time in tests; APF only adds startup work
            "--storage-backend=etcd3",
            "--v=1",
        ],
        workdir / "kube-apiserver.log",
    )

    etcd.wait_until(lambda: _http_ok(f"http://127.0.0.1:{etcd_client}/health"), 30, "healthy")
    apiserver.start()
    kubeconfig = workdir / "kubeconfig"
    write_kubeconfig(kubeconfig, server, certs)
    plane = ControlPlane(server, kubeconfig, certs, etcd, apiserver, 0.0)
    try:
        apiserver.wait_until(lambda: plane.get("/readyz") == "ok", timeout, "ready (/readyz)")
    except Exception:
        plane.stop()
        raise
    plane.started_in = time.monotonic() - started
    return plane


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)
