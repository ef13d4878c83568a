"""Image automation: scan registries for the images found in HelmReleases and update tags per policy.

``service.ImagePolicyService`` is the sidecar's loop; ``scan`` asks registries at the least cost a cycle
allows; ``watched`` reads what a HelmRelease asks for (pure); ``credentials`` finds each release's
registry credentials; ``writeback`` commits tag moves to git; ``tag_update`` sets a tag in the manifests
under a path (``helmrelease images update``); ``health`` and ``metrics`` are what the kubelet and Prometheus
see. Every dependency (kube API, registry clients, git repository, metrics registry) is passed in by the
caller.
"""

from helmrelease.automation.credentials import CycleCredentials, PullSecretError, store_from_secret_data
from helmrelease.automation.health import Endpoints, Heartbeat
from helmrelease.automation.metrics import AutomationMetrics
from helmrelease.automation.scan import ImageScan, ImageScanner, RegistryPool, TagSource
from helmrelease.automation.service import (
    CycleReport,
    EventReason,
    ImagePolicyService,
    ImagePolicySettings,
    ReleaseOutcome,
)
from helmrelease.automation.watched import (
    GIT_WRITEBACK_ANNOTATION,
    PULL_SECRET_ANNOTATION,
    Hold,
    ImageTarget,
    TagMove,
    WatchedRelease,
    image_targets,
    read_release,
)
from helmrelease.automation.writeback import GitWriteback

__all__ = [
    "GIT_WRITEBACK_ANNOTATION",
    "PULL_SECRET_ANNOTATION",
    "AutomationMetrics",
    "CycleCredentials",
    "CycleReport",
    "Endpoints",
    "EventReason",
    "GitWriteback",
    "Heartbeat",
    "Hold",
    "ImagePolicyService",
    "ImagePolicySettings",
    "ImageScan",
    "ImageScanner",
    "ImageTarget",
    "PullSecretError",
    "RegistryPool",
    "ReleaseOutcome",
    "TagMove",
    "TagSource",
    "WatchedRelease",
    "image_targets",
    "read_release",
    "store_from_secret_data",
]
