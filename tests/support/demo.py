"""`make demo`: the whole system on this machine, with nothing but what `make tools` built.

Starts etcd + kube-apiserver, an OCI registry and a Helm chart repository on loopback, installs the CRD, pushes a few
image tags, runs the operator and the image-policy sidecar, applies the example HelmReleases and shows them
reconcile. It keeps running until Ctrl-C and prints how to point kubectl and helm at it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from kubernetes import config as k8s_config

from tests.support import charts, controlplane, registry
from tests.support.examples import TARGET_NAMESPACES, git_chart_repository, render_examples
from tests.support.helmtool import Helm
from tests.support.kubectl import kubectl
from tests.support.nodesim import NodeSimulator
from tests.support.procs import BIN_DIR, REPO_ROOT, Process, free_port, tail
from tests.support.wait import NeverHappened, eventually

DEMO_DIR = REPO_ROOT / ".demo"


def _say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--exit-after", type=float, default=0, help="stop after N seconds (0: run until Ctrl-C)"
    )
    args = parser.parse_args(argv)

    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir()
    stack: list[Process] = []
    servers: list[charts.ChartRepository] = []
    nodes: NodeSimulator | None = None
    try:
        _say("starting etcd + kube-apiserver")
        plane = controlplane.start(DEMO_DIR / "controlplane")
        stack += [plane.apiserver, plane.etcd]
        print(f"    control plane ready in {plane.started_in:.1f}s at {plane.server}")
        env = dict(
            os.environ, KUBECONFIG=str(plane.kubeconfig), PATH=f"{BIN_DIR}:{os.environ.get('PATH', '')}"
        )
        os.environ.update(env)

        _say("starting the OCI registry and the chart repository")
        reg = registry.start(DEMO_DIR / "registry")
        stack.insert(0, reg.process)
        helm = Helm.create("helm", DEMO_DIR / "helm", plane.kubeconfig)
        repo = charts.serve_repository(helm, DEMO_DIR / "charts")
        servers.append(repo)
        oci_base = charts.push_oci_charts(helm, reg, repo.directory)
        print(f"    registry {reg.host}, chart repository {repo.url}, OCI charts {oci_base}")

        pusher = registry.ImagePusher(reg)
        for age, tag in ((60, "1.0.0"), (40, "1.0.1"), (20, "1.1.0")):
            pusher.push("demo/app", tag, created=registry.utc(age))
        print("    pushed demo/app:1.0.0, 1.0.1, 1.1.0")

        _say("installing the HelmRelease CRD")
        kubectl(plane.kubeconfig, "apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
        kubectl(plane.kubeconfig, "wait", "--for=condition=Established", "crd/helmreleases.helm.fluxcd.io")

        helmrelease = str(Path(sys.executable).with_name("helmrelease"))
        operator_env = dict(
            env,
            HELM_CACHE_HOME=str(DEMO_DIR / "helm" / "cache"),
            HELM_CONFIG_HOME=str(DEMO_DIR / "helm" / "config"),
            HELM_DATA_HOME=str(DEMO_DIR / "helm" / "data"),
        )
        _say("running the operator and the image-policy sidecar")
        operator_metrics_port = free_port()
        operator = Process(
            "operator",
            [
                helmrelease,
                "run",
                "--all-namespaces",
                "--resync-interval",
                "60",
                "--helm",
                str(BIN_DIR / "helm"),
                "--state-dir",
                str(DEMO_DIR / "operator-state"),
                "--insecure-registry",
                reg.host,
                "--git-protocols",
                "https,ssh,file",
                "--metrics-port",
                str(operator_metrics_port),
            ],
            DEMO_DIR / "operator.log",
            env=operator_env,
        ).start()
        health_port, metrics_port = free_port(), free_port()
        sidecar = Process(
            "image-policy",
            [
                helmrelease,
                "image-policy",
                "--interval",
                "10",
                "--insecure-registry",
                reg.host,
                "--state-dir",
                str(DEMO_DIR / "image-policy-state"),
                "--health-port",
                str(health_port),
                "--metrics-port",
                str(metrics_port),
            ],
            DEMO_DIR / "image-policy.log",
            env=operator_env,
        ).start()
        stack[:0] = [sidecar, operator]
        # No kubelets here: this stand-in reports the demo's Deployments ready and runs helm test Pods to
        # completion, so `wait` and `test.enable` behave as on a real cluster (tests/support/nodesim.py).
        api = k8s_config.new_client_from_config(config_file=str(plane.kubeconfig))
        nodes = NodeSimulator(api).start()

        _say("applying manifests/examples")
        for namespace in ("demo", *TARGET_NAMESPACES):
            kubectl(plane.kubeconfig, "create", "namespace", namespace)
            kubectl(plane.kubeconfig, "label", "namespace", namespace, "helmrelease-test=1")
            kubectl(plane.kubeconfig, "create", "serviceaccount", "default", "-n", namespace)
        git_url, _ = git_chart_repository(DEMO_DIR / "git")
        manifests = render_examples(chart_repository=repo.url, oci_base=oci_base, git_url=git_url)
        # The automated example follows demo/app in the local registry.
        manifests = manifests.replace("example.invalid/app", f"{reg.host}/demo/app")
        (DEMO_DIR / "examples.yaml").write_text(manifests)
        print(kubectl(plane.kubeconfig, "apply", "-n", "demo", "-f", "-", input_text=manifests), end="")

        _say("waiting for the releases to reconcile (kubectl get hr -n demo)")

        def reconciled() -> bool:
            table = kubectl(plane.kubeconfig, "get", "hr", "-n", "demo", check=False)
            print(table, flush=True)
            rows = [line for line in table.splitlines()[1:] if line.strip()]
            return not operator.running or (bool(rows) and all(" True " in line for line in rows))

        with contextlib.suppress(NeverHappened):  # the person can still look at what is there
            eventually(reconciled, 180, "the example releases to be Ready", interval=5)
        if not operator.running:
            print(f"operator exited:\n{tail(operator.log_path)}")
            return 1
        print(kubectl(plane.kubeconfig, "get", "deploy,svc,cm", "-n", "demo"))

        def app_image() -> str:
            out = kubectl(
                plane.kubeconfig,
                "get",
                "deploy",
                "demo-app",
                "-n",
                "demo",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
                check=False,
            )
            return out.strip()

        def wait_image(tag: str) -> None:
            with contextlib.suppress(NeverHappened):
                eventually(
                    lambda: not sidecar.running or app_image().endswith(f":{tag}"),
                    120,
                    f"demo-app to run {tag}",
                    interval=2,
                )
            if not sidecar.running:
                print(f"image-policy exited:\n{tail(sidecar.log_path)}")
            print(f"    deployment demo-app runs {app_image()}")

        _say(
            "image automation: demo/app 1.0.1 is the newest under semver:~1.0; the sidecar moves the release to it"
        )
        wait_image("1.0.1")
        _say("pushing demo/app:1.0.2 (and 1.1.0-rc.1, outside the policy)")
        pusher.push("demo/app", "1.0.2", created=registry.utc(0))
        pusher.push("demo/app", "1.1.0-rc.1", created=registry.utc(0))
        wait_image("1.0.2")
        print(
            kubectl(
                plane.kubeconfig,
                "get",
                "events",
                "-n",
                "demo",
                "--field-selector",
                "involvedObject.name=app",
                "--sort-by",
                ".lastTimestamp",
            )
        )
        print(kubectl(plane.kubeconfig, "get", "hr", "-n", "demo"))

        print(
            f"""
The demo is running. In another shell:
    export KUBECONFIG={plane.kubeconfig}
    export PATH={BIN_DIR}:$PATH
    kubectl get hr -A            # HelmReleases with Ready, phase and message
    kubectl describe hr -n demo  # conditions and Events
    helm list -A                 # the releases the operator made
Logs: {DEMO_DIR}/operator.log, {DEMO_DIR}/image-policy.log
Operator metrics: http://127.0.0.1:{operator_metrics_port}/metrics
Sidecar: http://127.0.0.1:{health_port}/healthz, metrics at http://127.0.0.1:{metrics_port}/metrics
Press Ctrl-C to stop everything.""",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        threading.Event().wait(args.exit_after or None)  # until Ctrl-C, SIGTERM or --exit-after
    except KeyboardInterrupt:
        pass
    finally:
        _say("stopping")
        if nodes is not None:
            nodes.stop()
        for server in servers:
            server.stop()
        for process in stack:
            process.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
