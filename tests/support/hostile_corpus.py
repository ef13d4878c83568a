"""The hostile-input corpus: HelmReleases a careless or malicious user can send, each with the answer it must get.

One table, read by tests/integration/test_hostile_corpus.py, which sends every entry through one operator (and one
sidecar cycle) in one namespace. An answer is one of:

- ``Refused``: the API server refuses the object (422 naming the field, 413 for a body over its limit), so nothing
  ever reaches the operator;
- ``Fails``: the object is stored, and the operator answers ``Ready=False`` with a CamelCase reason on one of its
  conditions, a message naming what to fix, and exactly one Warning Event with that reason;
- ``Installs``: hostile-looking content that is valid (shell metacharacters, emoji in values): it is installed
  verbatim, and the canary file the payload would ``touch`` never appears;
- ``SidecarWarns``: annotations the sidecar cannot act on: the release installs, and one sidecar cycle posts a
  Warning Event with that reason and moves no tag.

Every shell payload names the canary path, so a command smuggled through any of them would create it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: ``spec.values`` of the corpus entries whose values do not matter (the chart's own defaults otherwise).
PLAIN_VALUES: dict[str, Any] = {"message": "hostile"}


@dataclass(frozen=True)
class Refused:
    """The API server refuses the create: ``status`` and a part of its message (the field's path)."""

    field: str
    status: int = 422


@dataclass(frozen=True)
class Fails:
    """``Ready=False`` with ``reason`` on Ready, Released or ChartFetched, whose message contains ``message``."""

    reason: str
    message: str
    #: Text that must appear nowhere the user reads (status, Events, the operator's log): a password in a URL.
    hidden: str | None = None


@dataclass(frozen=True)
class Installs:
    """Valid content: Ready, and the release's ConfigMap holds ``message`` verbatim (when given)."""

    message: str | None = None


@dataclass(frozen=True)
class SidecarWarns:
    """The release installs; one sidecar cycle posts a Warning ``reason`` whose message contains ``message``."""

    reason: str
    message: str


Answer = Refused | Fails | Installs | SidecarWarns


@dataclass(frozen=True)
class Hostile:
    """One corpus entry: how the object differs from a valid one, and what it must be answered with."""

    id: str
    answer: Answer
    #: Merged over ``spec`` of a valid release (``chart`` merged key by key; ``None`` removes a chart key).
    spec: dict[str, Any] = field(default_factory=dict)
    #: Merged over ``metadata`` (a ``name`` here replaces the generated one).
    metadata: dict[str, Any] = field(default_factory=dict)
    #: ConfigMaps (name → values.yaml text) the entry needs in the namespace.
    config_maps: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """What the entries are made against: the canary path, a live chart repository, a registry image."""

    canary: Path
    chart_repository: str
    image: str

    @property
    def payloads(self) -> dict[str, str]:
        """Shell syntax that would run ``touch <canary>`` if any part of the operator handed it to a shell."""
        c = self.canary
        return {
            "subst": f"$(touch {c})",
            "backtick": f"`touch {c}`",
            "semicolon": f"x; touch {c}",
            "pipe": f"x | touch {c}",
            "and": f"x && touch {c}",
            "newline": f"x\ntouch {c}",
            "redirect": f"x > {c}",
        }


def nested(depth: int) -> dict[str, Any]:
    """A values tree ``depth`` maps deep."""
    tree: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        tree = {"n": tree}
    return tree


AUTOMATED = {"fluxcd.io/automated": "true"}
#: A git URL no git reaches: a git entry that passes the schema fails on fetching, never on running a command.
UNREACHABLE_GIT = "http://127.0.0.1:1/org/charts.git"


def corpus(ctx: Context) -> list[Hostile]:
    """Every entry, in the order the test creates them."""
    p = ctx.payloads
    entries: list[Hostile] = [
        # --- wrong types in every field the CRD types ------------------------------------------------------
        Hostile("type-timeout-string", Refused("spec.timeout"), {"timeout": "300"}),
        Hostile("type-timeout-float", Refused("spec.timeout"), {"timeout": 1.5}),
        Hostile("type-max-history", Refused("spec.maxHistory"), {"maxHistory": "ten"}),
        Hostile("type-values-string", Refused("spec.values"), {"values": "message: hi"}),
        Hostile("type-values-list", Refused("spec.values"), {"values": [1, 2]}),
        Hostile("type-values-from-object", Refused("spec.valuesFrom"), {"valuesFrom": {"a": 1}}),
        Hostile("type-value-file-secrets", Refused("spec.valueFileSecrets[0]"), {"valueFileSecrets": ["s"]}),
        Hostile("type-chart-string", Refused("spec.chart"), {"chart": ctx.chart_repository}),
        Hostile("type-wait", Refused("spec.wait"), {"wait": "yes"}),
        Hostile("type-suspend", Refused("spec.suspend"), {"suspend": 1}),
        Hostile("type-rollback", Refused("spec.rollback"), {"rollback": True}),
        Hostile("type-test-enable", Refused("spec.test.enable"), {"test": {"enable": "true"}}),
        Hostile(
            "type-pull-secret", Refused("spec.chart.chartPullSecret"), {"chart": {"chartPullSecret": "x"}}
        ),
        Hostile("type-version-number", Refused("spec.chart.version"), {"chart": {"version": 1.0}}),
        Hostile("type-max-retries", Refused("spec.rollback.maxRetries"), {"rollback": {"maxRetries": "5"}}),
        Hostile("type-skip-crds", Refused("spec.skipCRDs"), {"skipCRDs": "false"}),
        Hostile(
            "type-key-number",
            Refused("spec.valuesFrom[0].configMapKeyRef.key"),
            {"valuesFrom": [{"configMapKeyRef": {"name": "v", "key": 7}}]},
        ),
        # --- empty strings ---------------------------------------------------------------------------------
        Hostile("empty-repository", Refused("spec.chart.repository"), {"chart": {"repository": ""}}),
        Hostile("empty-chart-name", Refused("spec.chart.name"), {"chart": {"name": ""}}),
        Hostile("empty-version", Refused("spec.chart.version"), {"chart": {"version": ""}}),
        Hostile("empty-release-name", Refused("spec.releaseName"), {"releaseName": ""}),
        Hostile("empty-target-namespace", Refused("spec.targetNamespace"), {"targetNamespace": ""}),
        Hostile("empty-values-from-item", Refused("spec.valuesFrom[0]"), {"valuesFrom": [{}]}),
        Hostile(
            "empty-config-map-name",
            Refused("spec.valuesFrom[0].configMapKeyRef.name"),
            {"valuesFrom": [{"configMapKeyRef": {"name": ""}}]},
        ),
        Hostile(
            "empty-pull-secret-name",
            Refused("spec.chart.chartPullSecret.name"),
            {"chart": {"chartPullSecret": {"name": ""}}},
        ),
        # --- huge ------------------------------------------------------------------------------------------
        # 3 MiB of values: over kube-apiserver's 3 MiB request limit, refused before it is decoded.
        Hostile(
            "huge-values-3mib",
            Refused("Request entity too large", status=413),
            {"values": {"blob": "x" * (3 * 1024 * 1024)}},
        ),
        Hostile(
            "huge-nesting-200",
            Fails("ValuesTooDeep", "nested more than 100 levels deep"),
            {"values": nested(200)},
        ),
        Hostile(
            "huge-values-from-101",
            Refused("spec.valuesFrom"),
            {"valuesFrom": [{"configMapKeyRef": {"name": f"v{i}"}} for i in range(101)]},
        ),
        Hostile("huge-release-name", Refused("spec.releaseName"), {"releaseName": "a" * 54}),
        Hostile(
            "huge-chart-path",
            Refused("spec.chart.path"),
            {
                "chart": {
                    "repository": None,
                    "name": None,
                    "version": None,
                    "git": UNREACHABLE_GIT,
                    "path": "c/" * 1000,
                }
            },
        ),
        # --- unicode and emoji ------------------------------------------------------------------------------
        Hostile(
            "unicode-values",
            Installs("🚀 héllo 世界 \u202etxt.exe"),
            {"values": {"message": "🚀 héllo 世界 \u202etxt.exe"}},
        ),
        Hostile("unicode-release-name", Refused("spec.releaseName"), {"releaseName": "rocket-🚀"}),
        Hostile("unicode-target-namespace", Refused("spec.targetNamespace"), {"targetNamespace": "naïve"}),
        Hostile("unicode-object-name", Refused("metadata.name"), metadata={"name": "emoji-🚀"}),
        Hostile("unicode-chart-name", Fails("ChartFetchFailed", "ünïcode"), {"chart": {"name": "ünïcode"}}),
        # --- shell metacharacters ------------------------------------------------------------------------
        Hostile("shell-release-name-subst", Refused("spec.releaseName"), {"releaseName": p["subst"]}),
        Hostile("shell-release-name-semicolon", Refused("spec.releaseName"), {"releaseName": p["semicolon"]}),
        Hostile(
            "shell-target-namespace", Refused("spec.targetNamespace"), {"targetNamespace": p["backtick"]}
        ),
        Hostile("shell-values-subst", Installs(p["subst"]), {"values": {"message": p["subst"]}}),
        Hostile("shell-values-backtick", Installs(p["backtick"]), {"values": {"message": p["backtick"]}}),
        Hostile("shell-values-chain", Installs(p["and"]), {"values": {"message": p["and"], "x": p["pipe"]}}),
        Hostile("shell-values-newline", Installs(p["newline"]), {"values": {"message": p["newline"]}}),
        Hostile("shell-values-key", Installs(), {"values": {p["semicolon"]: p["redirect"]}}),
        Hostile(
            "shell-chart-version", Fails("ChartFetchFailed", "touch"), {"chart": {"version": p["semicolon"]}}
        ),
        Hostile("shell-chart-name", Fails("ChartFetchFailed", "touch"), {"chart": {"name": p["subst"]}}),
        Hostile(
            "shell-chart-name-option",
            Fails("ChartFetchFailed", "--post-renderer"),
            {"chart": {"name": f"--post-renderer=/bin/sh -c 'touch {ctx.canary}'"}},
        ),
        Hostile(
            "shell-chart-version-option",
            Fails("ChartFetchFailed", "--devel"),
            {"chart": {"version": "--devel"}},
        ),
        Hostile(
            "shell-git-path",
            Fails("ChartFetchFailed", "127.0.0.1:1"),
            {
                "chart": {
                    "repository": None,
                    "name": None,
                    "version": None,
                    "git": UNREACHABLE_GIT,
                    "path": f"charts/{p['subst']}",
                }
            },
        ),
        Hostile(
            "shell-values-key-name",
            Fails("ValuesError", "has no key"),
            {"valuesFrom": [{"configMapKeyRef": {"name": "plain", "key": p["subst"]}}]},
            config_maps={"plain": "message: plain\n"},
        ),
        # --- paths that leave their directory ----------------------------------------------------------------
        Hostile(
            "path-git-dotdot",
            Refused("spec.chart.path"),
            {
                "chart": {
                    "repository": None,
                    "name": None,
                    "version": None,
                    "git": UNREACHABLE_GIT,
                    "path": "../../etc",
                }
            },
        ),
        Hostile(
            "path-git-absolute",
            Refused("spec.chart.path"),
            {
                "chart": {
                    "repository": None,
                    "name": None,
                    "version": None,
                    "git": UNREACHABLE_GIT,
                    "path": "/etc",
                }
            },
        ),
        Hostile(
            "path-chart-file-dotdot",
            Refused("spec.valuesFrom[0].chartFileRef.path"),
            {"valuesFrom": [{"chartFileRef": {"path": "templates/../../secret.yaml"}}]},
        ),
        Hostile(
            "path-chart-file-absolute",
            Refused("spec.valuesFrom[0].chartFileRef.path"),
            {"valuesFrom": [{"chartFileRef": {"path": "/etc/passwd"}}]},
        ),
        # --- git transports and refs that run commands -----------------------------------------------------
        Hostile(
            "git-ext-transport",
            Refused("spec.chart.git"),
            {
                "chart": {
                    "repository": None,
                    "name": None,
                    "version": None,
                    "git": f"ext::sh -c touch% {ctx.canary}",
                    "path": "charts/app",
                }
            },
        ),
        Hostile(
            "git-fd-transport",
            Refused("spec.chart.git"),
            {
                "chart": {
                    "repository": None,
                    "name": None,
                    "version": None,
                    "git": "fd::17",
                    "path": "charts/app",
                }
            },
        ),
        Hostile(
            "git-url-option",
            Refused("spec.chart.git"),
            {
                "chart": {
                    "repository": None,
                    "name": None,
                    "version": None,
                    "git": f"--upload-pack=touch {ctx.canary}",
                    "path": "charts/app",
                }
            },
        ),
        Hostile(
            "git-ref-option",
            Refused("spec.chart.ref"),
            {
                "chart": {
                    "repository": None,
                    "name": None,
                    "version": None,
                    "git": UNREACHABLE_GIT,
                    "path": "charts/app",
                    "ref": f"--upload-pack=touch {ctx.canary}",
                }
            },
        ),
        Hostile(
            "git-ref-shell",
            Refused("spec.chart.ref"),
            {
                "chart": {
                    "repository": None,
                    "name": None,
                    "version": None,
                    "git": UNREACHABLE_GIT,
                    "path": "charts/app",
                    "ref": p["semicolon"],
                }
            },
        ),
        Hostile(
            "git-ref-dotdot",
            Refused("spec.chart.ref"),
            {
                "chart": {
                    "repository": None,
                    "name": None,
                    "version": None,
                    "git": UNREACHABLE_GIT,
                    "path": "charts/app",
                    "ref": "main..HEAD",
                }
            },
        ),
        # --- repository URLs ----------------------------------------------------------------------------
        Hostile(
            "repository-file", Refused("spec.chart.repository"), {"chart": {"repository": "file:///etc/"}}
        ),
        Hostile(
            "repository-ftp",
            Refused("spec.chart.repository"),
            {"chart": {"repository": "ftp://127.0.0.1/charts"}},
        ),
        Hostile(
            "repository-credentials",
            Fails("ChartFetchFailed", "http://***@127.0.0.1:1", hidden="hunter2"),
            {"chart": {"repository": "http://robot:hunter2@127.0.0.1:1/charts"}},
        ),
        Hostile(
            "external-values-file",
            Refused("spec.valuesFrom[0].externalSourceRef.url"),
            {"valuesFrom": [{"externalSourceRef": {"url": "file:///etc/passwd"}}]},
        ),
        # --- absurd timeouts and negative counts --------------------------------------------------------
        Hostile("timeout-huge", Refused("spec.timeout"), {"timeout": 10**12}),
        Hostile("timeout-negative", Refused("spec.timeout"), {"timeout": -1}),
        Hostile(
            "timeout-rollback-over-a-day", Refused("spec.rollback.timeout"), {"rollback": {"timeout": 86401}}
        ),
        Hostile("count-max-history-negative", Refused("spec.maxHistory"), {"maxHistory": -1}),
        Hostile(
            "count-max-retries-negative",
            Refused("spec.rollback.maxRetries"),
            {"rollback": {"maxRetries": -3}},
        ),
        Hostile("helm-version-unknown", Refused("spec.helmVersion"), {"helmVersion": "v4"}),
        # --- object names that are not names -------------------------------------------------------------
        Hostile(
            "name-pull-secret-path",
            Refused("spec.chart.chartPullSecret.name"),
            {"chart": {"chartPullSecret": {"name": "../kube-system/token"}}},
        ),
        Hostile(
            "name-secret-namespace-shell",
            Refused("spec.valuesFrom[0].secretKeyRef.namespace"),
            {"valuesFrom": [{"secretKeyRef": {"name": "s", "namespace": p["subst"]}}]},
        ),
        Hostile(
            "name-value-file-secret",
            Refused("spec.valueFileSecrets[0].name"),
            {"valueFileSecrets": [{"name": "a/b"}]},
        ),
        # --- values sources that are not YAML -------------------------------------------------------------
        Hostile(
            "values-from-not-yaml",
            Fails("ValuesError", "ConfigMap broken key values.yaml"),
            {"valuesFrom": [{"configMapKeyRef": {"name": "broken"}}]},
            config_maps={"broken": "message: [unclosed\n  - {\n"},
        ),
        Hostile(
            "values-from-scalar",
            Fails("ValuesError", "ConfigMap scalar key values.yaml"),
            {"valuesFrom": [{"configMapKeyRef": {"name": "scalar"}}]},
            config_maps={"scalar": "just a string\n"},
        ),
        # --- annotations the sidecar cannot act on ---------------------------------------------------------
        Hostile(
            "policy-semver-garbage",
            SidecarWarns("ImagePolicyInvalid", "semver:~>>1..x"),
            {"values": {"image": {"repository": ctx.image, "tag": "1.0.0"}}},
            metadata={"annotations": {**AUTOMATED, "fluxcd.io/tag.chart-image": "semver:~>>1..x"}},
        ),
        Hostile(
            "policy-regex-unclosed",
            SidecarWarns("ImagePolicyInvalid", "regex:(1"),
            {"values": {"image": {"repository": ctx.image, "tag": "1.0.0"}}},
            metadata={"annotations": {**AUTOMATED, "fluxcd.io/tag.chart-image": "regex:(1"}},
        ),
        Hostile(
            "policy-unknown-kind",
            SidecarWarns("ImagePolicyInvalid", "newest:1"),
            {"values": {"image": {"repository": ctx.image, "tag": "1.0.0"}}},
            metadata={"annotations": {**AUTOMATED, "fluxcd.io/tag.chart-image": "newest:1"}},
        ),
        Hostile(
            "annotations-conflicting",
            SidecarWarns("ImageAutomationWarning", "conflicts with"),
            {"values": {"image": {"repository": ctx.image, "tag": "1.0.0"}}},
            metadata={
                "annotations": {
                    **AUTOMATED,
                    "fluxcd.io/tag.chart-image": "semver:9.9.x",
                    "flux.weave.works/tag.chart-image": "glob:8.*",
                }
            },
        ),
    ]
    return entries
