"""Kubernetes API access for the reconciler and the image-policy sidecar.

REST calls go from the event loop over aiohttp (adapters.apiserver_http), configured by the official client's
`Configuration`; the official client itself (synchronous) serves only API discovery, in a worker thread. API errors
are converted once, here, into `KubeError` subclasses; the reconcile core decides what each means for a retry.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.client.rest import RESTResponse
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from helmrelease.adapters.apiserver_http import ApiTransport, TransportError
from helmrelease.api import bounded_json
from helmrelease.api.constants import GROUP, PLURAL, VERSION

COMPONENT = "helmrelease-operator"
#: Impersonating clients kept at once (one per tenant ServiceAccount in use; the oldest unused goes first).
IMPERSONATED_CLIENTS = 256

T = TypeVar("T")


#: Where a Pod's service account namespace is mounted.
SERVICE_ACCOUNT_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

#: Seconds to connect to the API server, and to wait for each read of its answer. The kubernetes client's own
#: default is to wait forever: an API server that stopped answering (a blackholed address, a hung proxy) held a
#: worker for good. Every call here is a small read or patch that a working API server answers in milliseconds; a
#: call is not tried again (the caller's pass is), so a dead server costs it 10 s, one that connected and went
#: silent 30 s. API discovery (the kubernetes client's transport) retries a connect three times.
REQUEST_TIMEOUT: Final = (10.0, 30.0)


class TimedApiClient(k8s.ApiClient):
    """An `ApiClient` whose every request has a deadline, `request_timeout` (connect, read) unless the call gives one.

    The generated APIs, the dynamic client and its API discovery all send through `call_api`; this override keeps
    its signature and only fills in the timeout. An expired one comes out of `KubeClient` as `ApiUnavailable`.
    """

    def __init__(
        self, *args: Any, request_timeout: tuple[float, float] = REQUEST_TIMEOUT, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.request_timeout = request_timeout

    def call_api(
        self,
        method: str,
        url: str,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> RESTResponse:
        return super().call_api(
            method, url, header_params, body, post_params, _request_timeout or self.request_timeout
        )


def api_client(
    kubeconfig: Path | None = None,
    *,
    context: str | None = None,
    request_timeout: tuple[float, float] = REQUEST_TIMEOUT,
) -> TimedApiClient:
    """A client from `kubeconfig`, else the pod's service account, else KUBECONFIG or ~/.kube/config.

    `context` picks a kubeconfig context other than the current one (kubectl's `--context`); naming one means a
    kubeconfig is wanted, so the service account is not tried. Its configuration is its own: the kubernetes
    package's global default stays untouched, so one process can hold clients for several clusters (and tests can
    build one without affecting the next). Raises `ClientConfigError` when there is nothing to build it from.
    """
    configuration = k8s.Configuration()
    if kubeconfig is None and context is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            pass  # not in a Pod (or without a service account token): use a kubeconfig
        else:
            return TimedApiClient(configuration, request_timeout=request_timeout)
    config_file = _kubeconfig_file(kubeconfig)
    try:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=config_file, context=context, client_configuration=configuration
        )
    except (k8s_config.ConfigException, OSError) as error:
        raise ClientConfigError(_config_problem(error)) from None
    return TimedApiClient(configuration, request_timeout=request_timeout)


def kubeconfig_namespace(kubeconfig: Path | None = None, context: str | None = None) -> str | None:
    """The namespace the kubeconfig's context (the current one, or `context`) names, as kubectl defaults to it;
    None when it names none. Raises `ClientConfigError` for a kubeconfig that cannot be read or lacks `context`."""
    config_file = _kubeconfig_file(kubeconfig)
    try:
        contexts, current = k8s_config.list_kube_config_contexts(config_file=config_file)  # type: ignore[no-untyped-call]
    except (k8s_config.ConfigException, OSError) as error:
        if kubeconfig is None and context is None and SERVICE_ACCOUNT_NAMESPACE.is_file():
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None  # in a Pod: its own, as kubectl does
        raise ClientConfigError(_config_problem(error)) from None
    chosen = (
        current if context is None else next((c for c in contexts or [] if c.get("name") == context), None)
    )
    if chosen is None:
        raise ClientConfigError(f"the kubeconfig has no context {context!r}")
    namespace = (chosen.get("context") or {}).get("namespace")
    return str(namespace) if namespace else None


def _kubeconfig_file(kubeconfig: Path | None) -> str | None:
    """The file named, which must exist: the client reads a missing one as an empty configuration."""
    if kubeconfig is not None and not kubeconfig.is_file():
        raise ClientConfigError(f"the kubeconfig {kubeconfig} does not exist")
    return str(kubeconfig) if kubeconfig is not None else None


def _config_problem(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename:
        return f"cannot read the kubeconfig {error.filename}: {error.strerror}"
    return str(error)


class KubeError(Exception):
    """An API call failed; the subclass says how (`ApiUnavailable`: not now; `NotFound`, `Forbidden` ...)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(KubeError):
    """The object does not exist (404)."""


class Forbidden(KubeError):
    """The identity making the request may not make it (401, 403)."""


class Conflict(KubeError):
    """The object changed since it was read (resourceVersion or a JSON-patch `test` op failed)."""


class AlreadyExists(Conflict):
    """A create found an object of that name (409 ``AlreadyExists``): for an Event named after what it tells,
    that it was told already."""


class Invalid(KubeError):
    """The API server rejected the request itself (422)."""


class ApiUnavailable(KubeError):
    """The API server could not be reached or could not answer now (connection refused or reset, a timeout, 429,
    5xx): nothing is wrong with the request, so it is retried soon."""


class ClientConfigError(KubeError):
    """Neither a usable kubeconfig nor a Pod's service account: nothing to reach the cluster with."""


#: API statuses that say "not now" rather than "not this".
_UNAVAILABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def _unavailable(error: Exception, what: str) -> ApiUnavailable:
    """urllib3's connection failures, in one line: `MaxRetryError` wraps the last attempt's error, whose text
    starts with a connection object's repr."""
    cause = getattr(error, "reason", None)
    if isinstance(cause, Exception):
        error = cause
    if isinstance(error, urllib3.exceptions.ProtocolError) and len(error.args) == 2:
        text = f"{error.args[0]} ({error.args[1]})"  # ("Connection aborted.", RemoteDisconnected(...))
    elif isinstance(error, urllib3.exceptions.ConnectTimeoutError) and len(error.args) == 2:
        text = str(error.args[1])  # (connection, "Connection to <host> timed out. (connect timeout=10.0)")
    else:
        text = str(error)
    reason = text.rpartition("): ")[2] or type(error).__name__
    return ApiUnavailable(f"{what}: the Kubernetes API server is unavailable: {reason}")


def _convert(error: ApiException, what: str) -> KubeError:
    status = int(error.status or 0)
    reason = _api_message(error)
    message = f"{what}: {reason}"
    if status in _UNAVAILABLE_STATUSES:
        return ApiUnavailable(message, status)
    if status == 404:
        return NotFound(message, status)
    if status in (401, 403):
        return Forbidden(message, status)
    if status == 409:
        if _api_reason(error) == "AlreadyExists":
            return AlreadyExists(message, status)
        return Conflict(message, status)
    if status == 422:
        # A failed JSON-patch `test` op is a 422 too: the object moved under us, so it is a conflict to retry.
        if "test operation" in reason or "testing value" in reason:
            return Conflict(message, status)
        return Invalid(message, status)
    return KubeError(message, status)


def _api_reason(error: ApiException) -> str:
    """The Status object's machine-readable ``reason`` (``AlreadyExists``, ``Conflict`` ...), or ''."""
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return ""
    return str(body.get("reason") or "") if isinstance(body, dict) else ""


def _api_message(error: ApiException) -> str:
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return str(error.reason)
    return str(body.get("message") or error.reason)


#: The field manager of the image-policy sidecar's patches (``metadata.managedFields``).
IMAGE_POLICY_FIELD_MANAGER = "helmrelease-image-policy"


#: Patches `annotate` sends at once: enough to hide the round trips, few against the API server's limits.
ANNOTATE_AT_ONCE: Final = 8


#: An Event's name is a DNS subdomain of at most 253 characters: the object's name, a dot, 16 hex digits.
_EVENT_NAME_PREFIX_LENGTH: Final = 253 - 17


def event_name(object_name: str, key: str | None = None) -> str:
    """``<object>.<16 hex digits>``: random without ``key``, else a digest of it (the same news, the same
    name). A long object name is shortened so the whole stays a valid name."""
    suffix = hashlib.sha256(key.encode()).hexdigest()[:16] if key is not None else uuid.uuid4().hex[:16]
    prefix = object_name[:_EVENT_NAME_PREFIX_LENGTH].rstrip(".-") or "object"
    return f"{prefix}.{suffix}"


@dataclass(frozen=True)
class ObjectRef:
    """Enough of an object to address it and to point an Event at it."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""


@dataclass(frozen=True)
class StoredRelease:
    """A Helm release as Helm stores it in the cluster (a `sh.helm.release.v1.<name>.v<N>` Secret), decoded."""

    name: str
    namespace: str
    revision: int
    status: str
    chart_name: str
    chart_version: str
    manifest: str
    labels: Mapping[str, str]
    app_version: str = ""
    description: str = ""
    #: When Helm last deployed the revision (its `info.last_deployed`, RFC 3339), "" when it recorded none.
    updated: str = ""


def _object_path(resource: Any, namespace: str, name: str) -> str:
    """The API path of one object of a discovered resource (the dynamic client's, with the names quoted: they come
    from a tenant-writable manifest)."""
    prefix = f"/{resource.prefix}/{resource.group_version}"
    if resource.namespaced and namespace:
        prefix += f"/namespaces/{quote(namespace, safe='')}"
    return f"{prefix}/{resource.name.lower()}/{quote(name, safe='')}"


def decode_release(secret_data: str) -> dict[str, Any]:
    """Helm's storage format: base64(gzip(json)) inside the Secret's (already base64) `release` key."""
    raw = base64.b64decode(base64.b64decode(secret_data))
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    decoded: dict[str, Any] = bounded_json.loads(raw)  # values of a release installed by hand may be deep
    return decoded


def _stored_release(secret: Mapping[str, Any], release: str, namespace: str, revision: int) -> StoredRelease:
    encoded = str((secret.get("data") or {}).get("release", ""))
    decoded = decode_release(encoded)
    chart_meta = (decoded.get("chart") or {}).get("metadata") or {}
    info = decoded.get("info") or {}
    return StoredRelease(
        name=release,
        namespace=namespace,
        revision=int(decoded.get("version", revision)),
        status=str(info.get("status", "unknown")),
        chart_name=str(chart_meta.get("name", "")),
        chart_version=str(chart_meta.get("version", "")),
        manifest=str(decoded.get("manifest", "")),
        labels=dict(_metadata(secret).get("labels") or {}),
        app_version=str(chart_meta.get("appVersion") or ""),
        description=str(info.get("description") or ""),
        updated=str(info.get("last_deployed") or ""),
    )


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def _path(*segments: str) -> str:
    return "/".join(quote(segment, safe="") for segment in segments)


#: Where the HelmReleases of a namespace live in the API.
def _helmreleases(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{_path(namespace)}/{PLURAL}"


@dataclass(frozen=True)
class StoredLease:
    """A coordination.k8s.io Lease as read: its holder, its last renewal and duration, and the version a write
    that replaces it must match (so two replicas never both take it)."""

    name: str
    namespace: str
    holder: str | None
    renewed: dt.datetime | None
    duration: float
    resource_version: str


def _stored_lease(lease: Mapping[str, Any]) -> StoredLease:
    metadata, spec = _metadata(lease), lease.get("spec") or {}
    return StoredLease(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        holder=spec.get("holderIdentity") or None,
        renewed=_lease_time(spec.get("renewTime") or spec.get("acquireTime")),
        duration=float(spec.get("leaseDurationSeconds") or 0),
        resource_version=str(metadata.get("resourceVersion") or ""),
    )


def _lease_time(text: Any) -> dt.datetime | None:
    """A Lease's MicroTime (RFC 3339 with microseconds), as an aware datetime; None when absent or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _micro_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _leases(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{_path(namespace)}/leases"


#: Bytes of answers decoded on the event loop; more go to a worker thread (a tenant's object may be huge, and
#: decoding it must not stall every other release). Objects of a chart are a few KiB.
DECODE_ON_LOOP_MAX: Final = 256 * 1024


async def _decoded(raws: Sequence[bytes]) -> list[Any]:
    """The answers decoded with the bounded decoder: on the loop when small, else in one worker thread."""
    if sum(len(raw) for raw in raws) <= DECODE_ON_LOOP_MAX:
        return [bounded_json.loads(raw) for raw in raws]
    return await asyncio.to_thread(lambda: [bounded_json.loads(raw) for raw in raws])


def _as_object(decoded: Any) -> dict[str, Any]:
    return decoded if isinstance(decoded, dict) else {}


class KubeClient:
    """Async facade over the parts of the Kubernetes API this operator uses.

    Requests go through the client's `ApiClient` (its configuration, authentication, impersonation header and
    timeouts) as plain REST calls answered with JSON, not through the generated `CoreV1Api`: importing that module
    builds a pydantic model of every core type, about 20 MiB of the operator's and of the sidecar's memory for the
    five kinds read here.
    """

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self._dynamic: DynamicClient | None = None
        #: Resources discovery found, by (apiVersion, kind): the dynamic client searches its cache on every call.
        self._resources: dict[tuple[str, str], Any] = {}
        #: Who the requests act as, for messages: None for the operator's own identity.
        self.identity: str | None = None
        self._impersonate: dict[str, str] = {}
        self._operator = self
        self._impersonated: dict[str, KubeClient] = {}
        #: The connection pool of REST calls; an impersonating client sends through its operator's.
        self._transport = ApiTransport(
            api_client.configuration, getattr(api_client, "request_timeout", REQUEST_TIMEOUT)
        )

    async def close(self) -> None:
        """Close the connection pool of REST calls (the caller closes the `ApiClient` it gave)."""
        await self._transport.close()

    def impersonating(self, namespace: str, service_account: str) -> KubeClient:
        """The same API acting as `system:serviceaccount:<namespace>:<service_account>` (multi-tenancy).

        A client of its own, from the same configuration (the shared client is never changed), that sends
        `Impersonate-User` on every request. Only the user is named: the apiserver adds the account's groups, as for
        helm's `--kube-as-user`, so the operator needs `impersonate` on serviceaccounts alone. Discovery is the
        operator's (it is the same for everyone). Clients are kept per account: a resync builds no connection pool.
        """
        operator = self._operator
        user = f"system:serviceaccount:{namespace}:{service_account}"
        client = operator._impersonated.pop(user, None)
        if client is None:
            api = TimedApiClient(
                operator.api_client.configuration,
                "Impersonate-User",
                user,
                request_timeout=getattr(operator.api_client, "request_timeout", REQUEST_TIMEOUT),
            )
            client = KubeClient(api)
            client.identity = f"ServiceAccount {namespace}/{service_account}"
            client._impersonate = {"Impersonate-User": user}
            client._operator = operator
            while len(operator._impersonated) >= IMPERSONATED_CLIENTS:
                operator._impersonated.pop(next(iter(operator._impersonated)))
        operator._impersonated[user] = client  # most recently used last
        return client

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking client call in a thread; every failure of the API comes out as a `KubeError`."""
        try:
            return await asyncio.to_thread(partial(fn, *args, **kwargs))
        except ApiException as error:
            raise _convert(error, what) from None
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as error:
            # MaxRetryError (refused, reset, DNS), ProtocolError, timeouts: the server, not the request.
            raise _unavailable(error, what) from None

    # --- values sources and credentials -------------------------------------------------------------------------

    async def config_map_data(self, namespace: str, name: str) -> dict[str, str]:
        cm = await self._get(
            f"ConfigMap {namespace}/{name}", f"/api/v1/namespaces/{_path(namespace, 'configmaps', name)}"
        )
        return {str(key): str(value) for key, value in (cm.get("data") or {}).items()}

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """Decoded Secret data. Callers must never log or report the values."""
        secret = await self._get(
            f"Secret {namespace}/{name}", f"/api/v1/namespaces/{_path(namespace, 'secrets', name)}"
        )
        return {
            key: base64.b64decode(value).decode("utf-8", "replace")
            for key, value in (secret.get("data") or {}).items()
        }

    async def namespace_exists(self, namespace: str) -> bool:
        try:
            # Undecoded: only whether it exists matters (every pass asks).
            await self._request(f"Namespace {namespace}", "GET", f"/api/v1/namespaces/{_path(namespace)}")
        except NotFound:
            return False
        return True

    async def service_account_exists(self, namespace: str, name: str) -> bool:
        try:
            await self._request(
                f"ServiceAccount {namespace}/{name}",
                "GET",
                f"/api/v1/namespaces/{_path(namespace, 'serviceaccounts', name)}",
            )
        except NotFound:
            return False
        return True

    async def service_account_pull_secrets(self, namespace: str, name: str) -> list[str]:
        account = await self._get(
            f"ServiceAccount {namespace}/{name}",
            f"/api/v1/namespaces/{_path(namespace, 'serviceaccounts', name)}",
        )
        refs = account.get("imagePullSecrets") or []
        return [str(ref["name"]) for ref in refs if isinstance(ref, Mapping) and ref.get("name")]

    # --- HelmRelease objects --------------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> bytes:
        """One REST call from the event loop (see adapters.apiserver_http); the response body undecoded (the
        client's own ``json.loads`` raises RecursionError on the objects nested 10,000 deep that the apiserver
        accepts). A status that is not 2xx raises the client's `ApiException`, as its generated APIs do; no answer
        at all raises `TransportError`."""
        headers = {**self.api_client.default_headers, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        answer = await self._operator._transport.send(method, path, query=query, body=body, headers=headers)
        if not 200 <= answer.status <= 299:
            error = ApiException(status=answer.status, reason=answer.reason)
            error.body = answer.data.decode("utf-8", "replace")
            error.headers = answer.headers
            raise error
        return answer.data

    async def _request(
        self,
        what: str,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> bytes:
        """`_send`, every failure converted once into a `KubeError`."""
        try:
            return await self._send(method, path, query, body, content_type)
        except ApiException as error:
            raise _convert(error, what) from None
        except TransportError as error:
            raise ApiUnavailable(f"{what}: the Kubernetes API server is unavailable: {error}") from None

    async def _get(self, what: str, path: str, query: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A GET whose answer is decoded with the bounded decoder (objects are tenant input)."""
        raw = await self._request(what, "GET", path, query)
        (decoded,) = await _decoded([raw])
        return decoded if isinstance(decoded, dict) else {}

    async def get_helmrelease(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._get(f"HelmRelease {namespace}/{name}", f"{_helmreleases(namespace)}/{_path(name)}")

    async def list_helmreleases(
        self, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """HelmReleases of a namespace (None: all), only those matching ``label_selector`` if given."""
        selector = {"labelSelector": label_selector} if label_selector else {}
        if namespace:
            result = await self._get(f"HelmReleases in {namespace}", _helmreleases(namespace), selector)
        else:
            result = await self._get("HelmReleases", f"/apis/{GROUP}/{VERSION}/{PLURAL}", selector)
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def patch_helmrelease_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        # The whole object comes back: left undecoded.
        await self._request(
            f"status of HelmRelease {namespace}/{name}",
            "PATCH",
            f"{_helmreleases(namespace)}/{_path(name)}/status",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    async def merge_patch_helmrelease(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Apply a JSON merge patch (RFC 7386): annotations and `spec.suspend` from the command line. Returns the
        object as the API server stored it, so the caller can see a field the CRD's schema pruned."""
        raw = await self._request(
            f"HelmRelease {namespace}/{name}",
            "PATCH",
            f"{_helmreleases(namespace)}/{_path(name)}",
            body=dict(patch),
            content_type="application/merge-patch+json",
        )
        (stored,) = await _decoded([raw])
        return _as_object(stored)

    async def json_patch_helmrelease(
        self, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> None:
        """Apply a JSON patch (RFC 6902). A failed `test` op comes back from the apiserver as a bare 422, like an
        invalid patch: callers re-read the object to tell a concurrent edit from a bad patch."""
        await self._request(  # the patched object comes back: left undecoded
            f"HelmRelease {namespace}/{name}",
            "PATCH",
            f"{_helmreleases(namespace)}/{_path(name)}",
            # Our name in managedFields, so a value someone else set back shows their manager, not a client's.
            query={"fieldManager": IMAGE_POLICY_FIELD_MANAGER},
            body=operations,
            content_type="application/json-patch+json",
        )

    # --- Events ---------------------------------------------------------------------------------------------------

    async def post_event(
        self, ref: ObjectRef, event_type: str, reason: str, message: str, *, key: str | None = None
    ) -> None:
        """A core/v1 Event on the object, as `kubectl describe` shows them. Failing to post is not fatal.

        ``key`` names what the Event tells (one move, one commit): the Event's name is derived from it, so
        posting the same news again (after a crash between posting and recording it) raises `AlreadyExists`
        instead of telling it twice. Without ``key`` every Event is new."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved = {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
        }
        if ref.uid:
            involved["uid"] = ref.uid
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name(ref.name, key), "namespace": ref.namespace},
            "involvedObject": involved,
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._request(
            f"Event for {ref.kind} {ref.namespace}/{ref.name}",
            "POST",
            f"/api/v1/namespaces/{_path(ref.namespace)}/events",
            body=event,
        )

    # --- Helm's own release storage -------------------------------------------------------------------------------

    async def stored_release(self, namespace: str, release: str, revision: int) -> StoredRelease | None:
        """Read one revision from Helm's Secret storage without spawning helm."""
        secret_name = f"sh.helm.release.v1.{release}.v{revision}"
        try:
            secret = await self._get(
                f"Secret {namespace}/{secret_name}",
                f"/api/v1/namespaces/{_path(namespace, 'secrets', secret_name)}",
            )
        except NotFound:
            return None
        return await asyncio.to_thread(_stored_release, secret, release, namespace, revision)

    async def stored_releases(self, namespace: str, release: str) -> list[StoredRelease]:
        """Every stored revision of a release (its history, as `helm history` lists it), oldest first."""
        secrets = await self._get(
            f"Helm storage of release {namespace}/{release}",
            f"/api/v1/namespaces/{_path(namespace)}/secrets",
            {"labelSelector": f"owner=helm,name={release}"},
        )
        stored = []
        for secret in secrets.get("items") or []:
            labels = _metadata(secret).get("labels") or {}
            version = str(labels.get("version", ""))
            if version.isdigit():
                stored.append(
                    await asyncio.to_thread(_stored_release, secret, release, namespace, int(version))
                )
        return sorted(stored, key=lambda entry: entry.revision)

    # --- Leases: a replica's claim on a release (peering) ---------------------------------------------------------

    async def read_lease(self, namespace: str, name: str) -> StoredLease | None:
        try:
            lease = await self._get(f"Lease {namespace}/{name}", f"{_leases(namespace)}/{_path(name)}")
        except NotFound:
            return None
        return _stored_lease(lease)

    async def write_lease(
        self, namespace: str, name: str, holder: str, duration: float, *, replacing: str | None
    ) -> StoredLease:
        """Create the Lease (`replacing` None) or replace the version `replacing` of it, held by `holder` and renewed
        now; raises `Conflict` when another write came first (created meanwhile, or a newer version)."""
        now = _micro_time(dt.datetime.now(dt.UTC))
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": COMPONENT},
        }
        if replacing is not None:
            metadata["resourceVersion"] = replacing
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": max(1, round(duration)),
                "acquireTime": now,
                "renewTime": now,
            },
        }
        what = f"Lease {namespace}/{name}"
        if replacing is None:
            raw = await self._request(what, "POST", _leases(namespace), body=body)
        else:
            raw = await self._request(what, "PUT", f"{_leases(namespace)}/{_path(name)}", body=body)
        written = bounded_json.loads(raw)
        return _stored_lease(written if isinstance(written, dict) else {})

    async def delete_lease(self, namespace: str, name: str, resource_version: str) -> None:
        """Delete the Lease if it is still at `resource_version` (ours, not taken meanwhile); gone already is fine."""
        try:
            await self._request(
                f"Lease {namespace}/{name}",
                "DELETE",
                f"{_leases(namespace)}/{_path(name)}",
                body={"preconditions": {"resourceVersion": resource_version}},
            )
        except NotFound:
            return

    async def release_storage_labels(self, namespace: str, release: str) -> list[dict[str, str]]:
        """The labels of every storage Secret of a release (what the index keeps), read from the API now."""
        secrets = await self._get(
            f"Helm storage of release {namespace}/{release}",
            f"/api/v1/namespaces/{_path(namespace)}/secrets",
            {"labelSelector": f"owner=helm,name={release}"},
        )
        return [
            {str(key): str(value) for key, value in (_metadata(secret).get("labels") or {}).items()}
            for secret in secrets.get("items") or []
            if isinstance(secret, Mapping)
        ]

    # --- arbitrary objects (drift detection, ownership annotations) -------------------------------------------

    async def _dynamic_client(self) -> DynamicClient:
        """The operator's dynamic client; an impersonating KubeClient adds its header to each request."""
        operator = self._operator
        if operator._dynamic is None:
            operator._dynamic = await self._call("API discovery", DynamicClient, operator.api_client)
        return operator._dynamic

    async def _resource(self, api_version: str, kind: str) -> Any:
        """The API resource of a kind, as discovery knows it; raises `ResourceNotFoundError` (not remembered: the
        kind may be installed later)."""
        operator = self._operator
        found = operator._resources.get((api_version, kind))
        if found is None:
            dynamic = await self._dynamic_client()
            found = await self._call(
                f"API discovery of {kind}", dynamic.resources.get, api_version=api_version, kind=kind
            )
            operator._resources[api_version, kind] = found
        return found

    def _headers(self) -> dict[str, Any]:
        """Headers for a dynamic-client request, fresh each time (the client adds to the dict it is given)."""
        return {"header_params": dict(self._impersonate)} if self._impersonate else {}

    async def get_object(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """The live object, or None if it (or its kind) does not exist."""
        (found,) = await self.get_objects([ObjectRef(api_version, kind, namespace or "", name)])
        return found

    async def get_objects(self, refs: Sequence[ObjectRef]) -> list[dict[str, Any] | None]:
        """The live objects, in order; None for one that (or whose kind) does not exist. The first failure raises.

        Read one after the other from the event loop as plain GETs, and decoded together (bounded: they are
        tenant input): none of the dynamic client's per-request work, and no thread hop per object (most of a
        resync's CPU was those).
        """
        paths: list[tuple[str, str | None]] = []
        for ref in refs:
            what = f"{ref.kind} {ref.namespace}/{ref.name}"
            try:
                resource = await self._resource(ref.api_version, ref.kind)
            except ResourceNotFoundError:
                paths.append((what, None))
                continue
            paths.append((what, _object_path(resource, ref.namespace, ref.name)))
        raws: list[bytes | None] = []
        for what, path in paths:
            try:
                raws.append(None if path is None else await self._request(what, "GET", path))
            except NotFound:
                raws.append(None)
        decoded = await _decoded([raw for raw in raws if raw is not None])
        found = iter(decoded)
        return [None if raw is None else _as_object(next(found)) for raw in raws]

    async def annotate(self, objects: Iterable[ObjectRef], annotations: Mapping[str, str]) -> list[ObjectRef]:
        """Merge-patch annotations onto objects (Flux v1's antecedent marker on every resource of a release),
        ``ANNOTATE_AT_ONCE`` at a time: one after the other, a chart of 30 objects held its release's status
        write back by 30 round trips. Objects gone or of a kind the server lacks are skipped; the ones these
        credentials may not patch (403) come back, for the caller to name."""
        body = {"metadata": {"annotations": dict(annotations)}}
        places = asyncio.Semaphore(ANNOTATE_AT_ONCE)

        async def patch(ref: ObjectRef) -> ObjectRef | None:
            async with places:
                try:
                    resource = await self._resource(ref.api_version, ref.kind)
                except ResourceNotFoundError:
                    return None
                try:
                    await self._request(
                        f"{ref.kind} {ref.namespace}/{ref.name}",
                        "PATCH",
                        _object_path(resource, ref.namespace, ref.name),
                        body=body,
                        content_type="application/merge-patch+json",
                    )
                except NotFound:
                    return None
                except Forbidden:
                    return ref
                return None

        refused = await asyncio.gather(*(patch(ref) for ref in objects))
        return [ref for ref in refused if ref is not None]

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a Pod (helm test hooks, when `test.cleanup` asks for it); a missing one is fine."""
        try:
            await self._request(
                f"Pod {namespace}/{name}", "DELETE", f"/api/v1/namespaces/{_path(namespace, 'pods', name)}"
            )
        except NotFound:
            return
