"""``HelmRelease.spec`` as pydantic models, with the Flux v1 defaults built in.

Python names are snake_case and aliased to the API's camelCase, so models parse straight from the API (or a
manifest) and can also be built by name in code and tests. Unknown fields are ignored, as the apiserver would
prune them anyway, and explicit nulls count as unset, which is also what the apiserver does with them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from helmrelease.api.bounded_json import depth_of
from helmrelease.api.constants import (
    DEFAULT_GIT_REF,
    DEFAULT_MAX_HISTORY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_SECONDS,
    DEFAULT_VALUES_KEY,
    MAX_TIMEOUT_SECONDS,
    MIN_TIMEOUT_SECONDS,
)
from helmrelease.api.limits import VALUES_DEPTH_MAX

#: Error type of a ``helmVersion: v2``; api.resource turns it into ``Reason.UNSUPPORTED_HELM_VERSION``.
UNSUPPORTED_HELM_VERSION_ERROR = "unsupported_helm_version"
#: Error type of ``spec.values`` nested deeper than ``VALUES_DEPTH_MAX``; it becomes ``Reason.VALUES_TOO_DEEP``.
VALUES_TOO_DEEP_ERROR = "values_too_deep"
#: Tags of the chart source union; they show up in pydantic error locations and are dropped from field paths.
REPOSITORY_CHART_TAG = "repository-chart"
GIT_CHART_TAG = "git-chart"


class ApiModel(BaseModel):
    """Base of every API model: camelCase aliases, construction by name, immutable, unknown fields ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_unset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


def _empty_is_unset(value: Any) -> Any:
    """Flux v1 treated ``""`` like an absent field for its optional strings; so do we."""
    return None if value == "" else value


def _relative_path(value: str) -> str:
    """Paths inside a chart or git checkout must stay inside it: reject absolute paths and ``..``."""
    if value.startswith("/") or ".." in value.split("/"):
        raise PydanticCustomError("relative_path", "must be a relative path that stays inside its directory")
    return value


#: A Kubernetes object name (DNS-1123 subdomain) and a namespace name (DNS-1123 label), as the CRD declares them.
OBJECT_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
NAMESPACE_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_REPOSITORY_SCHEME = re.compile(r"^(https?|oci)://", re.IGNORECASE)
_HTTP_SCHEME = re.compile(r"^https?://", re.IGNORECASE)
#: git's ``<transport>::<address>`` remote-helper syntax; ``ext::`` runs its address as a command.
_REMOTE_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_GIT_REF = re.compile(r"^[A-Za-z0-9._/][A-Za-z0-9._/-]*$")


def _git_url(value: str) -> str:
    """A git URL git cannot read as an option or as a command to run (the CRD's rule, for older objects)."""
    if value.startswith("-") or _REMOTE_HELPER.match(value):
        raise PydanticCustomError(
            "git_url",
            "must be a git URL (https://..., ssh://..., git@host:org/repo); a URL starting with '-' or naming a "
            "remote helper (transport::address, such as ext::) is refused, since git would run it as a command",
        )
    return value


def _git_ref(value: str | None) -> str | None:
    """A branch, tag or commit name: nothing git reads as an option or a revision range."""
    if value is not None and (not _GIT_REF.match(value) or ".." in value):
        raise PydanticCustomError(
            "git_ref",
            "must be a branch, tag or commit name (letters, digits, '.', '_', '/' and '-', not first, no '..'); "
            "git would read a leading '-' as an option",
        )
    return value


def _http_url(value: str) -> str:
    if not _HTTP_SCHEME.match(value):
        raise PydanticCustomError(
            "url_scheme", "must be an http:// or https:// URL; other schemes (file://) are refused"
        )
    return value


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def display_url(url: str) -> str:
    """A URL as messages and logs show it: credentials in it (`user:password@`, a token as user, a query) masked.

    `chart.repository: https://user:password@host/` is valid (Flux v1 manifests use it); the password must still
    never reach a condition, an Event or a log line. A plain ssh user (`ssh://git@host/...`) is not a credential.
    """
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:
        return _USERINFO.sub("***@", url)
    netloc = parts.netloc
    if password is not None or (username is not None and parts.scheme not in ("ssh", "git+ssh")):
        netloc = "***@" + netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc, query="***" if parts.query else ""))


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """`url` without its userinfo, and the (username, password) it held, decoded; None when it held none.

    Helm only sends credentials in a repository URL for the index, not for the chart packages it links to, and
    puts them in the registry host for OCI: they work when they travel as the repository's credentials instead.
    """
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return url, None
    if username is None and password is None:
        return url, None
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return bare, (unquote(username or ""), unquote(password or ""))


_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def mask_urls(text: str) -> str:
    """Every URL in `text` (an error from an HTTP client, helm, git) as `display_url` shows it."""
    return _URL_IN_TEXT.sub(lambda match: display_url(match.group()), text)


def clean_repository_url(url: str) -> str:
    """Flux v1's URL cleaning: drop the query string, end the path with exactly one slash.

    Helm repository indexes resolve chart URLs relative to the repository URL, which needs the trailing slash;
    a query (often a one-off token) must not make two spellings of the same repository look different.
    """
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/", query=""))


def _timeout() -> Any:
    """A timeout field: seconds, within the bounds the CRD also declares (objects stored before it did too)."""
    return Field(DEFAULT_TIMEOUT_SECONDS, ge=MIN_TIMEOUT_SECONDS, le=MAX_TIMEOUT_SECONDS)


def too_deep_message() -> str:
    """What a person reads when values nest deeper than the operator accepts, whatever their source."""
    return (
        f"nested more than {VALUES_DEPTH_MAX} levels deep, more than this operator accepts; "
        "flatten the values (charts rarely need more than 20 levels)"
    )


class LocalObjectReference(ApiModel):
    """A Secret in the HelmRelease's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN)


class RepoChartSource(ApiModel):
    """A chart from a Helm repository (``https://...``) or an OCI registry (``oci://...``)."""

    repository: str = Field(min_length=1)
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    chart_pull_secret: LocalObjectReference | None = None

    @field_validator("repository")
    @classmethod
    def _clean(cls, value: str) -> str:
        if not _REPOSITORY_SCHEME.match(value):
            raise PydanticCustomError(
                "url_scheme",
                "must be an http://, https:// or oci:// URL; other schemes (file://, ftp://) are refused",
            )
        try:
            return clean_repository_url(value)
        except ValueError as error:
            raise PydanticCustomError("url", "not a valid URL: {error}", {"error": str(error)}) from error

    @property
    def label(self) -> str:
        """How messages name the chart: ``app 1.2.0 from https://***@charts.example.com/``."""
        return f"{self.name} {self.version} from {display_url(self.repository)}"

    @property
    def is_oci(self) -> bool:
        return self.repository.startswith("oci://")

    @property
    def oci_reference(self) -> str:
        """``oci://host/path/name``, what ``helm pull`` takes (the repository already ends with ``/``)."""
        return f"{self.repository}{self.name}"


class GitChartSource(ApiModel):
    """A chart in a directory of a git repository (``git@host:org/repo``, ``ssh://...`` or ``https://...``)."""

    url: str = Field(alias="git", min_length=1)
    ref: str | None = None
    path: str = Field(min_length=1)
    secret_ref: LocalObjectReference | None = None
    skip_dep_update: bool = False

    _unset_empty_ref = field_validator("ref", mode="before")(_empty_is_unset)
    _check_path = field_validator("path")(_relative_path)
    _check_url = field_validator("url")(_git_url)
    _check_ref = field_validator("ref")(_git_ref)

    @property
    def label(self) -> str:
        """How messages name the chart: ``charts/app from https://***@git.example.com/org/repo``."""
        return f"{self.path} from {display_url(self.url)}"

    def ref_or(self, default: str = DEFAULT_GIT_REF) -> str:
        """The ref to check out: the spec's, else the operator's configured default."""
        return self.ref or default


def _chart_source_tag(value: Any) -> str | None:
    """Which kind of chart source ``value`` is; ``None`` (rejected) when it has both kinds or neither."""
    if isinstance(value, RepoChartSource):
        return REPOSITORY_CHART_TAG
    if isinstance(value, GitChartSource):
        return GIT_CHART_TAG
    if not isinstance(value, dict):
        return None
    has_repository = value.get("repository") is not None
    has_git = value.get("git") is not None
    if has_repository == has_git:
        return None
    return REPOSITORY_CHART_TAG if has_repository else GIT_CHART_TAG


ChartSource = Annotated[
    Annotated[RepoChartSource, Tag(REPOSITORY_CHART_TAG)] | Annotated[GitChartSource, Tag(GIT_CHART_TAG)],
    Discriminator(
        _chart_source_tag,
        custom_error_type="chart_source",
        custom_error_message=(
            "set exactly one chart source: repository, name and version (a Helm repository or an oci:// "
            "registry), or git and path (a directory in a git repository)"
        ),
    ),
]


class _KeySelector(ApiModel):
    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN)
    namespace: str | None = Field(None, max_length=63, pattern=NAMESPACE_PATTERN)
    key: str = DEFAULT_VALUES_KEY
    optional: bool = False

    _unset_empty_namespace = field_validator("namespace", mode="before")(_empty_is_unset)

    @field_validator("key", mode="before")
    @classmethod
    def _default_empty_key(cls, value: Any) -> Any:
        return DEFAULT_VALUES_KEY if value == "" else value


class ConfigMapKeySelector(_KeySelector):
    """Values from a key of a ConfigMap (the HelmRelease's namespace unless ``namespace`` is set)."""

    @property
    def label(self) -> str:
        return f"ConfigMap {self.name} key {self.key}"


class SecretKeySelector(_KeySelector):
    """Values from a key of a Secret (the HelmRelease's namespace unless ``namespace`` is set)."""

    @property
    def label(self) -> str:
        return f"Secret {self.name} key {self.key}"


class ExternalSourceSelector(ApiModel):
    """Values from a URL."""

    url: str = Field(min_length=1)
    optional: bool = False

    _check_url = field_validator("url")(_http_url)

    @property
    def label(self) -> str:
        return f"URL {display_url(self.url)}"


class ChartFileSelector(ApiModel):
    """Values from a file inside the chart, such as an alternative values file shipped with it."""

    path: str = Field(min_length=1)
    optional: bool = False

    _check_path = field_validator("path")(_relative_path)

    @property
    def label(self) -> str:
        return f"chart file {self.path}"


ValuesSource = ConfigMapKeySelector | SecretKeySelector | ExternalSourceSelector | ChartFileSelector


class ValuesFromSource(ApiModel):
    """One ``valuesFrom`` item: exactly one of its four references."""

    config_map_key_ref: ConfigMapKeySelector | None = None
    secret_key_ref: SecretKeySelector | None = None
    external_source_ref: ExternalSourceSelector | None = None
    chart_file_ref: ChartFileSelector | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ValuesFromSource:
        if len(self._set()) != 1:
            raise PydanticCustomError(
                "values_source",
                "set exactly one of configMapKeyRef, secretKeyRef, externalSourceRef, chartFileRef",
            )
        return self

    def _set(self) -> list[ValuesSource]:
        candidates = (
            self.config_map_key_ref,
            self.secret_key_ref,
            self.external_source_ref,
            self.chart_file_ref,
        )
        return [source for source in candidates if source is not None]

    @property
    def selected(self) -> ValuesSource:
        """The one reference this item holds, typed, for ``match``."""
        return self._set()[0]


class Rollback(ApiModel):
    """What to do when an upgrade (or the test after it) fails."""

    enable: bool = False
    retry: bool = False
    #: Upgrade retries after rollbacks; 0 means no limit (as in Flux v1).
    max_retries: int = Field(DEFAULT_MAX_RETRIES, ge=0)
    force: bool = False
    recreate: bool = False
    disable_hooks: bool = False
    wait: bool = False
    timeout: int = _timeout()


class Test(ApiModel):
    """``helm test`` after every install and upgrade."""

    __test__ = False  # a model, not a pytest test class

    enable: bool = False
    ignore_failures: bool = False
    timeout: int = _timeout()
    cleanup: bool = True


class HelmReleaseSpec(ApiModel):
    """The desired release. Defaults that need the object's name live on ``api.resource.HelmRelease``."""

    chart: ChartSource
    release_name: str | None = None
    target_namespace: str | None = None
    helm_version: Literal["v2", "v3"] | None = None
    timeout: int = _timeout()
    max_history: int = Field(DEFAULT_MAX_HISTORY, ge=0)
    reset_values: bool | None = None
    wait: bool | None = None
    force_upgrade: bool = False
    skip_crds: bool = Field(False, alias="skipCRDs")
    disable_openapi_validation: bool = Field(False, alias="disableOpenAPIValidation")
    rollback: Rollback = Rollback()
    test: Test = Test()
    values: dict[str, Any] = {}
    values_from: tuple[ValuesFromSource, ...] = ()
    value_file_secrets: tuple[LocalObjectReference, ...] = ()
    #: Our multi-tenancy extension: Helm acts as this ServiceAccount of the HelmRelease's namespace.
    service_account_name: str | None = None
    #: Flux v2's field: no Helm action (nor image move by the sidecar) while true; resuming reconciles at once.
    suspend: bool = False

    _unset_empty_strings = field_validator(
        "release_name", "target_namespace", "service_account_name", mode="before"
    )(_empty_is_unset)

    @field_validator("helm_version")
    @classmethod
    def _helm_v3_only(cls, value: str | None) -> str | None:
        if value == "v2":
            raise PydanticCustomError(
                UNSUPPORTED_HELM_VERSION_ERROR,
                "Helm v2 reached its end of life in 2020 and is not supported; set helmVersion: v3 or "
                "remove it (migrate the release with helm-2to3 first)",
            )
        return value

    @field_validator("values")
    @classmethod
    def _bounded_depth(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Values this deep are an attack or a mistake, and recursive code (Helm's and ours) trips over them."""
        if depth_of(value) > VALUES_DEPTH_MAX:
            raise PydanticCustomError(VALUES_TOO_DEEP_ERROR, too_deep_message())
        return value

    @property
    def wait_enabled(self) -> bool:
        """Unset ``wait`` waits when the result is acted upon: a rollback or a test needs ready resources."""
        if self.wait is not None:
            return self.wait
        return self.rollback.enable or self.test.enable

    @property
    def reuse_values(self) -> bool:
        """Only an explicit ``resetValues: false`` reuses the previous release's values (as in Flux v1)."""
        return self.reset_values is False

    @property
    def values_sources(self) -> tuple[ValuesSource, ...]:
        """Values sources in merge order: the deprecated ``valueFileSecrets``, then ``valuesFrom``."""
        legacy = tuple(SecretKeySelector(name=secret.name) for secret in self.value_file_secrets)
        return legacy + tuple(item.selected for item in self.values_from)
