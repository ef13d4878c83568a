"""Values reach the release exactly as the API server holds them, whatever Unicode they carry.

The real operator installs with helm (v4 and v3): a value outside the BMP (an emoji), combining marks,
right-to-left text, control characters YAML refuses raw or folds (DEL, C1, NEL, U+2028), a BOM and
noncharacters, in keys as in values. Helm's stored values must hold them all as written, and the chart's
ConfigMap the message it renders.

What the message holds is less than what values may: helm v4 sends a rendered object to the API server
as a server-side-apply patch, JSON read as YAML, in which DEL, C1 controls and U+FFFE/U+FFFF are refused
and NEL is folded into a space, whoever wrote the values; so those travel in values the chart does not
render.
"""

from __future__ import annotations

import pytest
from kubernetes import client as k8s
from tests.support.charts import ChartRepository
from tests.support.helmtool import Helm
from tests.support.operator import StartOperator, create_hr, get_hr, helmrelease, ready, wait_for_hr

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

# Written with escapes: the point is which code points, not how an editor shows them.
TEXTS = {
    "emoji": "\U0001f680 launch",
    "zwj-family": "\U0001f469\u200d\U0001f4bb",
    "combining": "e\u0301 n\u0303 \u0915\u094d\u0937",
    "rtl": "\u05e9\u05dc\u05d5\u05dd \u202b\u0645\u0631\u062d\u0628\u0627\u202c \u200fx",
    "astral": "\U0001d518\U0001d52b\U0001d526 \U0010fffd \U000e0067",
    "controls": "nul\x00 tab\t ls\u2028 ps\u2029 bom\ufeff",
}
UNRENDERED = {"refused-or-folded-by-apply": "del\x7f c1\x80\x9f nel\x85 non\ufffe\uffff"}


@pytest.mark.parametrize("helm_binary", ["helm", "helm3"])
def test_unicode_values_reach_the_release_unchanged(
    helm_binary: str,
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    chart_repo: ChartRepository,
    helm: Helm,
) -> None:
    operator = start_operator(helm=helm_binary)
    message = " | ".join(TEXTS.values())
    values = {
        "message": message,
        "texts": {**TEXTS, **UNRENDERED},
        "\U0001f511 key \u05e9": {"e\u0301\x7f": "\x85\U0001f680"},
    }
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    create_hr(custom, namespace, helmrelease("unicode", chart, values))
    stored = get_hr(custom, namespace, "unicode")
    assert stored["spec"]["values"] == values  # the API server takes every one of them

    wait_for_hr(custom, namespace, "unicode", ready, operator=operator, what="Ready")

    release = f"{namespace}-unicode"
    assert helm.json("get", "values", release, "--namespace", namespace) == values
    config_map = core.read_namespaced_config_map(release, namespace)
    assert config_map.data["message"] == message
