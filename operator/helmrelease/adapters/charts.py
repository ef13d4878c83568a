"""Chart sources: fetch a chart from a Helm repository, an OCI registry or git into a local cache.

A cache entry is keyed by everything that determines its content (source, exact version or git commit, chart
path, and a fingerprint of the credentials used, so one tenant never reads a chart fetched with another tenant's
credentials). An unchanged chart is therefore not downloaded again; for git only `git ls-remote` runs to learn the
commit. Concurrent fetches of one source share a single download.

Credentials never appear on a command line: helm reads them from a private repositories file or registry config
(HELM_REPOSITORY_CONFIG, HELM_REGISTRY_CONFIG), git from an askpass helper that reads its environment, or from a
private key file named in GIT_SSH_COMMAND. All of those live in a private temp directory removed afterwards.

Errors are the chart source family of `adapters.source_errors`: helm's (ChartNotFound, RepositoryUnreachable,
Unauthorized, Timeout, ...) for `helm pull`, git's own `GitError`s, which are those same kinds, raised by the one
git runner as they are, and `InvalidChartSource` for sources refused before or after fetching: a chart path
escaping the repository, a symlink pointing outside it, a git transport that is not allowed, no chart at the path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import ssl as ssl_module
import tarfile
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import semver
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from helmrelease.adapters.coalesce import TaskMemo
from helmrelease.adapters.credentials import BasicCredentials
from helmrelease.adapters.git import (
    GitRunner,
    RefNotFound,
    SshCredentials,
    StateLayout,
    credential_secrets,
    git_environment,
    write_credential_files,
)
from helmrelease.adapters.helm import ChartNotFound, HelmCommand, Timeout
from helmrelease.adapters.process import private_directory, write_private_file
from helmrelease.adapters.source_errors import InvalidChartSource
from helmrelease.api.aliasing import ExcessiveAliasing, check_aliasing
from helmrelease.api.constants import DEFAULT_GIT_PROTOCOLS
from helmrelease.api.limits import INDEX_SIZE_MAX
from helmrelease.api.spec import mask_urls

# ---- Sources


@dataclass(frozen=True)
class RepositoryChart:
    """A chart from a Helm HTTP(S) repository (`chart.repository`, `chart.name`, `chart.version`)."""

    repository: str
    name: str
    version: str
    auth: BasicCredentials | None = None
    ca_file: Path | None = None


@dataclass(frozen=True)
class OCIChart:
    """A chart in an OCI registry: `reference` is `oci://<host>/<path>/<name>`."""

    reference: str
    version: str
    auth: BasicCredentials | None = None
    ca_file: Path | None = None


@dataclass(frozen=True)
class GitChart:
    """A chart directory in a git repository (`chart.git`, `chart.ref`, `chart.path`, `chart.secretRef`)."""

    url: str
    ref: str
    path: str
    credentials: BasicCredentials | SshCredentials | None = None
    skip_dependency_update: bool = False


ChartSource = RepositoryChart | OCIChart | GitChart


@dataclass(frozen=True)
class FetchedChart:
    """A chart ready for helm: an unpacked directory in the cache and what identifies its content.

    `source_digest` is `sha256:<hex>` of the package for repository and OCI charts, the commit for git charts.
    """

    path: Path
    name: str
    version: str
    source_digest: str
    commit: str | None = None

    @property
    def revision(self) -> str:
        """What status.revision reports: the git commit of a git chart, else the chart version."""
        return self.commit or self.version


@dataclass(frozen=True)
class FetcherSettings:
    cache_dir: Path
    deadline: float = 300.0
    git_executable: str = "git"
    # Registries reached over plain HTTP (`--plain-http`), by host[:port].
    plain_http_hosts: frozenset[str] = frozenset()
    # Cached charts kept (least recently used go first); each is an unpacked chart, typically well under 1 MiB.
    max_entries: int = 256
    # Transports git may use (GIT_ALLOW_PROTOCOL). `file` lets a tenant read repositories on our disk.
    git_protocols: tuple[str, ...] = DEFAULT_GIT_PROTOCOLS
    # Bytes of a repository's index.yaml helm is given at most: it holds the whole index in memory, many times over.
    max_index_bytes: int = INDEX_SIZE_MAX


# ---- Pure parts

_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_GIT_REF = re.compile(r"^[A-Za-z0-9._/-]+$")


def chart_subpath(path: str) -> PurePosixPath:
    """The chart's path inside a git repository, refused when it could point outside the repository."""
    candidate = PurePosixPath(path or ".")
    if "\0" in path or candidate.is_absolute() or ".." in candidate.parts:
        raise InvalidChartSource("chart path", f"{path!r} must be relative and stay inside the repository")
    return candidate


def validate_git_ref(ref: str) -> str:
    """A branch, tag or commit name: no refspec syntax (`:`, `+`, `^`), nothing git could read as an option."""
    if not _GIT_REF.match(ref) or ref.startswith("-") or ".." in ref:
        raise InvalidChartSource("git ref", f"{ref!r} is not a branch, tag or commit name")
    return ref


def is_commit(ref: str) -> bool:
    return _COMMIT.match(ref) is not None


def resolve_ref(ls_remote: str, ref: str) -> str | None:
    """The commit `ref` names in `git ls-remote` output: a branch first, then a tag (peeled), then a full ref."""
    refs: dict[str, str] = {}
    for line in ls_remote.splitlines():
        sha, _, name = line.partition("\t")
        if sha and name:
            refs[name.strip()] = sha.strip()
    for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"{ref}^{{}}", ref):
        if candidate in refs:
            return refs[candidate]
    return None


def is_exact_version(version: str) -> bool:
    """An exact chart version can be looked up in the cache; a range must be resolved by helm each time."""
    return semver.Version.is_valid(version.removeprefix("v"))


def repositories_file(url: str, auth: BasicCredentials | None, ca_file: Path | None) -> dict[str, Any]:
    """A helm repositories.yaml (JSON is YAML) with one repository named `source`, credentials included."""
    entry: dict[str, Any] = {"name": "source", "url": url.rstrip("/")}
    if auth is not None:
        entry.update(username=auth.username, password=auth.password)
    if ca_file is not None:
        entry["caFile"] = str(ca_file)
    return {"apiVersion": "", "generated": "0001-01-01T00:00:00Z", "repositories": [entry]}


def registry_config(host: str, auth: BasicCredentials | None) -> dict[str, Any]:
    """A docker-style registry config for helm (HELM_REGISTRY_CONFIG); empty without credentials."""
    if auth is None:
        return {"auths": {}}
    return {"auths": {host: {"auth": auth.token}}}


def oci_host(reference: str) -> str:
    """`host[:port]` of `oci://host[:port]/path`."""
    return urlsplit(reference).netloc


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(part) for part in parts]).encode()).hexdigest()[:40]


def normalized_version(version: str) -> str:
    """Helm accepts `v1.2.3` for the chart version 1.2.3: both name one cache entry."""
    return version.removeprefix("v")


class IndexTooLarge(InvalidChartSource):
    """The repository's index.yaml is larger than the operator lets helm read."""


def index_url(repository: str) -> str:
    return repository.rstrip("/") + "/index.yaml"


def index_too_large(repository: str, limit: int) -> IndexTooLarge:
    mib = limit / 1_048_576
    return IndexTooLarge(
        "index.yaml",
        f"{mask_urls(index_url(repository))} is larger than {mib:g} MiB, the limit of --max-index-size (helm "
        "holds the whole index in memory); raise the limit, or use a repository that publishes fewer chart "
        "versions, or an OCI chart",
    )


async def check_index_size(source: RepositoryChart, limit: int, deadline: float) -> None:
    """Read the repository's index.yaml as far as `limit` bytes, counting and keeping nothing, before helm reads it
    whole: `IndexTooLarge` past the limit, `Timeout` past the deadline. Any other failure (refused, 401, 404, TLS)
    is left for helm to meet and report in its words, as for any repository."""
    ssl: ssl_module.SSLContext | bool = True
    if source.ca_file is not None:
        ssl = ssl_module.create_default_context(cafile=str(source.ca_file))
    headers = {"Authorization": source.auth.authorization} if source.auth else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=deadline)) as session,
            session.get(index_url(source.repository), headers=headers, ssl=ssl) as response,
        ):
            if response.status != 200:
                return
            if (response.content_length or 0) > limit:
                raise index_too_large(source.repository, limit)
            seen = 0
            async for chunk in response.content.iter_chunked(1 << 16):
                seen += len(chunk)
                if seen > limit:
                    raise index_too_large(source.repository, limit)
    except TimeoutError:
        raise Timeout(
            "index.yaml",
            f"reading {mask_urls(index_url(source.repository))} did not finish within {deadline:g}s and was stopped",
        ) from None
    except (aiohttp.ClientError, ValueError, OSError):
        return


# ---- Filesystem steps (blocking: run in a thread)

_METADATA = "fetched.json"


@dataclass(frozen=True)
class ChartMetadata:
    """What a fetch needs of Chart.yaml, read once: the chart's name and version, and whether it has dependencies
    to vendor (Chart.yaml `dependencies`, apiVersion v2, or a requirements.yaml, v1)."""

    name: str
    version: str
    has_dependencies: bool


def read_chart_yaml(chart_directory: Path) -> ChartMetadata:
    """The chart's metadata; a directory without a usable Chart.yaml holds no chart."""
    chart_file = chart_directory / "Chart.yaml"
    if not chart_file.is_file():
        raise ChartNotFound("chart", f"no Chart.yaml in {chart_directory.name!r}")
    try:
        meta = YAML(typ="safe").load(chart_file.read_text())
        check_aliasing(meta)
    except YAMLError as error:
        raise InvalidChartSource("chart", f"Chart.yaml is not valid YAML: {error}") from None
    except ExcessiveAliasing as error:
        raise InvalidChartSource("chart", f"Chart.yaml is not accepted: {error}") from None
    if not isinstance(meta, dict) or not meta.get("name") or not meta.get("version"):
        raise InvalidChartSource("chart", "Chart.yaml has no name or version")
    has_dependencies = bool(meta.get("dependencies")) or (chart_directory / "requirements.yaml").is_file()
    return ChartMetadata(str(meta["name"]), str(meta["version"]), has_dependencies)


def contained_chart_directory(root: Path, subpath: PurePosixPath) -> Path:
    """`root/subpath` after resolving symlinks, refused when it or any symlink inside it leads out of `root`."""
    real_root = root.resolve()
    chart_directory = (root / subpath).resolve()
    if not chart_directory.is_relative_to(real_root):
        raise InvalidChartSource("chart path", f"{str(subpath)!r} resolves outside the repository")
    if not chart_directory.is_dir():
        raise ChartNotFound("chart path", f"{str(subpath)!r} is not a directory in the repository")
    for directory, subdirectories, files in os.walk(chart_directory):
        for name in (*subdirectories, *files):
            entry = Path(directory) / name
            if entry.is_symlink() and not entry.resolve().is_relative_to(real_root):
                relative = entry.relative_to(chart_directory)
                raise InvalidChartSource(
                    "chart path", f"symlink {str(relative)!r} points outside the repository"
                )
    return chart_directory


def _store(staging: Path, entry: Path, chart: FetchedChart) -> FetchedChart:
    """Record `chart` (still in `staging`) and move it into place as `entry` atomically."""
    relative = chart.path.relative_to(staging)
    metadata = {
        "chart": str(relative),
        "name": chart.name,
        "version": chart.version,
        "digest": chart.source_digest,
        "commit": chart.commit,
    }
    (staging / _METADATA).write_text(json.dumps(metadata))
    try:
        staging.rename(entry)
    except OSError:  # stored meanwhile (another process sharing the cache): same content, keep theirs
        shutil.rmtree(staging, ignore_errors=True)
    return dataclasses.replace(chart, path=entry / relative)


def _lookup(entry: Path) -> FetchedChart | None:
    try:
        metadata = json.loads((entry / _METADATA).read_text())
        os.utime(entry)  # last used now: what cache pruning goes by
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return FetchedChart(
        entry / metadata["chart"],
        metadata["name"],
        metadata["version"],
        metadata["digest"],
        metadata["commit"],
    )


def _unpack(package: Path, staging: Path) -> tuple[Path, str]:
    """Unpack a chart package into `staging`: its chart directory and the package's digest."""
    digest = "sha256:" + hashlib.sha256(package.read_bytes()).hexdigest()
    unpacked = staging / "chart"
    try:
        with tarfile.open(package, "r:gz") as archive:
            archive.extractall(unpacked, filter="data")  # refuses absolute paths, `..` and links leading out
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        # helm pull saves whatever the server sent (an HTML error page, a truncated download) without looking.
        raise InvalidChartSource(
            "chart", f"{package.name} is not a chart package (a gzip-compressed tar archive): {error}"
        ) from None
    charts = [path.parent for path in unpacked.glob("*/Chart.yaml")]
    if len(charts) != 1:
        raise InvalidChartSource("chart", f"the package holds {len(charts)} charts at its top level, not one")
    return charts[0], digest


def prune_cache(cache_dir: Path, keep: int, min_idle: float = 600.0) -> list[Path]:
    """Remove the least recently used cache entries beyond `keep`; returns what was removed.

    An entry used in the last `min_idle` seconds is never removed, however full the cache, so a chart that a helm
    command is reading right now stays in place.
    """
    entries = [path for path in cache_dir.iterdir() if path.is_dir() and not path.name.startswith(".")]
    entries.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    now = time.time()
    removed = []
    for entry in entries[keep:]:
        if now - entry.stat().st_mtime >= min_idle:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _new_staging(cache_dir: Path) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = cache_dir / f".staging-{uuid.uuid4().hex}"
    staging.mkdir(mode=0o700)
    return staging


# ---- The fetcher


def credential_salt(cache_dir: Path) -> bytes:
    """The key of credential fingerprints in cache keys, kept beside the cache (0600) so a restarted operator finds
    its charts again. Fingerprints are HMACs, so the cache's directory names do not let anyone test a guessed
    password without this file, which only the operator can read."""
    path = cache_dir / ".credential-salt"
    try:
        salt = path.read_bytes()
    except FileNotFoundError:
        salt = b""
    if len(salt) == 32:
        return salt
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    salt = secrets.token_bytes(32)
    write_private_file(path, salt, 0o600)
    return salt


class ChartFetcher:
    """Fetches charts into `settings.cache_dir`, once per content, sharing concurrent fetches of one source."""

    def __init__(self, helm: HelmCommand, settings: FetcherSettings) -> None:
        self._helm = helm
        self._settings = settings
        self._salt = credential_salt(settings.cache_dir)
        # Only downloads in flight are shared: the cache on disk remembers the outcomes.
        self._downloads: TaskMemo[str, FetchedChart] = TaskMemo(in_flight_only=True)

    async def fetch(self, source: ChartSource) -> FetchedChart:
        """The chart of `source` in the cache, downloading it only when its content is not there yet.

        A cancelled caller leaves the shared download running for the others (and for the cache).
        """
        key = self._request_key(source)
        return await self._downloads.run(key, lambda: self._fetch(source), name=f"fetch-chart-{key[:12]}")

    def _fingerprint(self, auth: BasicCredentials | None, *more: bytes | str | None) -> str:
        """A keyed hash of the credentials: one cache entry per credential, nothing guessable on disk."""
        material: list[object] = [[auth.username, auth.password] if auth else None]
        material += [part.hex() if isinstance(part, bytes) else part for part in more]
        return hmac.new(self._salt, json.dumps(material).encode(), hashlib.sha256).hexdigest()

    def _package_key(self, source: RepositoryChart | OCIChart, version: str) -> str:
        """The cache entry of a packaged chart at an exact `version`."""
        ca_file = str(source.ca_file) if source.ca_file else None
        credentials = self._fingerprint(source.auth, ca_file)
        location = (
            ["repository", source.repository.rstrip("/"), source.name]
            if isinstance(source, RepositoryChart)
            else ["oci", source.reference]
        )
        return cache_key(*location, normalized_version(version), credentials)

    def _git_key(self, source: GitChart, commit: str) -> str:
        """The cache entry of a git chart at `commit` (or at a ref, to coalesce requests before resolving it)."""
        match source.credentials:
            case BasicCredentials() as basic:
                credentials = self._fingerprint(basic)
            case SshCredentials(private_key=key, known_hosts=known_hosts):
                credentials = self._fingerprint(None, str(key), str(known_hosts))
            case None:
                credentials = self._fingerprint(None)
        return cache_key("git", source.url, commit, source.path, source.skip_dependency_update, credentials)

    def _request_key(self, source: ChartSource) -> str:
        if isinstance(source, GitChart):
            return self._git_key(source, source.ref)
        return self._package_key(source, source.version)

    async def _fetch(self, source: ChartSource) -> FetchedChart:
        if isinstance(source, GitChart):
            return await self._fetch_git(source)
        if is_exact_version(source.version):
            cached = _lookup(self._entry(self._package_key(source, source.version)))
            if cached is not None:
                return cached
        return await self._fetch_package(source)

    def _entry(self, key: str) -> Path:
        return self._settings.cache_dir / key

    async def _store(self, staging: Path, entry: Path, chart: FetchedChart) -> FetchedChart:
        """Move a fetched chart into the cache, then drop the least recently used entries beyond the limit."""
        stored = await asyncio.to_thread(_store, staging, entry, chart)
        await asyncio.to_thread(prune_cache, self._settings.cache_dir, self._settings.max_entries)
        return stored

    # ---- packaged charts

    async def _fetch_package(self, source: RepositoryChart | OCIChart) -> FetchedChart:
        """`helm pull` with credentials in private config files, then unpack into the cache."""
        deadline = self._settings.deadline
        with private_directory(self._helm.settings.temp_root) as work:
            environment = {
                "HELM_REPOSITORY_CONFIG": str(work / "repositories.json"),
                "HELM_REPOSITORY_CACHE": str(work / "index"),
                "HELM_REGISTRY_CONFIG": str(work / "registry.json"),
            }
            package_dir = work / "package"
            package_dir.mkdir()
            if isinstance(source, RepositoryChart):
                await check_index_size(source, self._settings.max_index_bytes, deadline)
                config = repositories_file(source.repository, source.auth, source.ca_file)
                write_private_file(work / "repositories.json", json.dumps(config).encode(), 0o600)
                await self._helm.update_repository("source", extra_environment=environment, deadline=deadline)
                package = await self._helm.pull_chart(
                    f"source/{source.name}",
                    package_dir,
                    version=source.version or None,
                    extra_environment=environment,
                    deadline=deadline,
                )
            else:
                host = oci_host(source.reference)
                config = registry_config(host, source.auth)
                write_private_file(work / "registry.json", json.dumps(config).encode(), 0o600)
                package = await self._helm.pull_chart(
                    source.reference,
                    package_dir,
                    version=source.version or None,
                    plain_http=host in self._settings.plain_http_hosts,
                    ca_file=source.ca_file,
                    extra_environment=environment,
                    deadline=deadline,
                )
            staging = await asyncio.to_thread(_new_staging, self._settings.cache_dir)
            try:
                chart_directory, digest = await asyncio.to_thread(_unpack, package, staging)
                meta = await asyncio.to_thread(read_chart_yaml, chart_directory)
                # Keyed by the version helm resolved, so a range and its exact version share one entry.
                entry = self._entry(self._package_key(source, meta.version))
                chart = FetchedChart(chart_directory, meta.name, meta.version, digest)
                return await self._store(staging, entry, chart)
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, staging, True)
                raise

    # ---- git

    async def _fetch_git(self, source: GitChart) -> FetchedChart:
        subpath = chart_subpath(source.path)
        ref = validate_git_ref(source.ref)
        if not source.url or source.url.startswith("-"):
            raise InvalidChartSource("git url", f"{source.url!r} is not a repository URL")
        with private_directory(self._helm.settings.temp_root) as work:
            git = GitRunner(
                self._git_environment(source, work),
                work,
                self._settings.git_executable,
                self._settings.deadline,
                credential_secrets(source.credentials),
            )
            commit = ref if is_commit(ref) else await self._remote_commit(git, source.url, ref)
            cached = _lookup(self._entry(self._git_key(source, commit)))
            if cached is not None:
                return cached
            staging = await asyncio.to_thread(_new_staging, self._settings.cache_dir)
            try:
                return await self._checkout(git, source, subpath, staging)
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, staging, True)
                raise

    def _git_environment(self, source: GitChart, work: Path) -> dict[str, str]:
        """adapters.git's environment and credential files in `work`, restricted to the allowed transports."""
        layout = StateLayout(work)
        write_credential_files(layout, source.credentials)
        env = git_environment(os.environ, layout, source.credentials)
        env["GIT_ALLOW_PROTOCOL"] = ":".join(self._settings.git_protocols)
        return env

    async def _remote_commit(self, git: GitRunner, url: str, ref: str) -> str:
        listing = await git.run("ls-remote", "--", url, ref, f"{ref}^{{}}")
        commit = resolve_ref(listing.stdout, ref)
        if commit is None:
            raise RefNotFound("ls-remote", f"no branch or tag {ref!r} in the repository")
        return commit

    async def _checkout(
        self, git: GitRunner, source: GitChart, subpath: PurePosixPath, staging: Path
    ) -> FetchedChart:
        """A shallow checkout of `source.ref` in `staging`, checked, dependencies vendored, stored by commit."""
        checkout = staging / "checkout"
        await git.run("init", "--quiet", str(checkout))
        await git.run("fetch", "--quiet", "--depth", "1", "--", source.url, source.ref, cwd=checkout)
        commit = (await git.run("rev-parse", "FETCH_HEAD^{commit}", cwd=checkout)).stdout.strip()
        await git.run("checkout", "--quiet", "--detach", commit, cwd=checkout)
        await asyncio.to_thread(shutil.rmtree, checkout / ".git")
        chart_directory = await asyncio.to_thread(contained_chart_directory, checkout, subpath)
        meta = await asyncio.to_thread(read_chart_yaml, chart_directory)
        if meta.has_dependencies and not source.skip_dependency_update:
            await self._helm.update_dependencies(chart_directory, deadline=self._settings.deadline)
        entry = self._entry(self._git_key(source, commit))
        chart = FetchedChart(chart_directory, meta.name, meta.version, commit, commit)
        return await self._store(staging, entry, chart)
