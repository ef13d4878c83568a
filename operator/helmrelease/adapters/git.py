"""Git write-back for image updates: keep a clone, edit, commit, push; redo the edit if someone pushed first.

Only the ``git`` CLI is used, always through an argument list (never a shell) with an environment we build
ourselves, so the user's global config, credential helpers and terminal prompts never take part. Credentials
never appear in a URL, an argument or a message: HTTPS passwords reach git through a ``GIT_ASKPASS`` script
that reads them from the environment, SSH keys through ``GIT_SSH_COMMAND``.

When a push is rejected because the branch moved, we fetch the new head and run the edit again on the new tree
instead of rebasing our commit: the user may have changed the very file we edit, and only the edit knows how
to apply the tag change to their version.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import re
import shlex
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urlsplit

from helmrelease.adapters import process
from helmrelease.adapters.process import inherited_environment, write_private_file
from helmrelease.api.constants import DEFAULT_GIT_REF

logger = logging.getLogger(__name__)

USERNAME_VARIABLE = "HELMRELEASE_GIT_USERNAME"
PASSWORD_VARIABLE = "HELMRELEASE_GIT_PASSWORD"  # noqa: S105 - the variable's name, not a password

# git runs the askpass program with a prompt ("Username for 'https://host': " or "Password for ...") as its
# only argument and reads the answer from stdout. The script holds no secret: the values live in git's
# environment only.
ASKPASS_SCRIPT = f"""#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "${USERNAME_VARIABLE}" ;;
  *) printf '%s\\n' "${PASSWORD_VARIABLE}" ;;
esac
"""

REDACTED = "***"
_MAX_DETAIL_LINES = 4
_MAX_DETAIL_CHARS = 500
_HTTP_USERINFO = re.compile(r"(?i)\b(https?://)[^/@\s]+@")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/:@\s]*):[^/@\s]*@")
# Progress, advice and warnings: what git says around an error rather than about it.
_NOISE_LINE = re.compile(
    r"^(hint:|warning:|To |Done$|Cloning into |Please make sure you have the correct access rights$"
    r"|and the repository exists\.$)"
)
_SEVERITY_PREFIX = re.compile(r"^(fatal|error): ")
_REF_FORBIDDEN = re.compile(r"[\x00-\x20~^:?*\[\\\x7f]|\.\.|@\{|//|/\.|\.lock(/|$)|^[/.]|/$|\.$")

HostKeyChecking = Literal["yes", "accept-new", "no"]


# ------------------------------------------------------------------------------------------------------------
# Errors


class GitError(Exception):
    """A git operation failed. The message is short, without git's hints, and never carries a credential."""

    def __init__(self, operation: str, detail: str, *, secrets: Iterable[str] = ()) -> None:
        self.operation = operation
        self.detail = clean_detail(detail, secrets)
        super().__init__(
            f"git {operation} failed: {self.detail}" if self.detail else f"git {operation} failed"
        )


class AuthFailed(GitError):
    """The remote refused our credentials (or we had none and it wanted some)."""


class RemoteUnreachable(GitError):
    """The remote could not be reached or does not exist at that address."""


class PushRejected(GitError):
    """The remote refused our commit: the branch moved on every attempt, or a hook or protection said no."""

    def __init__(self, detail: str, *, attempts: int, secrets: Iterable[str] = ()) -> None:
        self.attempts = attempts
        super().__init__("push", detail, secrets=secrets)


def scrub_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret and every URL password (and HTTP user, often a token) replaced."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _HTTP_USERINFO.sub(rf"\g<1>{REDACTED}@", text)
    return _URL_PASSWORD.sub(rf"\g<1>:{REDACTED}@", text)


def clean_detail(output: str, secrets: Iterable[str] = ()) -> str:
    """The informative lines of git's output, scrubbed and joined: short enough for a status condition or log.

    Progress, hints, warnings and git's stock advice are dropped; of the rest the first lines are kept, since
    git (and ssh or the remote before it) names the cause before the consequences.
    """
    lines = [" ".join(line.split()) for line in scrub_secrets(output, secrets).splitlines()]
    meaningful = [_SEVERITY_PREFIX.sub("", line) for line in lines if line and not _NOISE_LINE.match(line)]
    detail = "; ".join(meaningful[:_MAX_DETAIL_LINES])
    if len(detail) > _MAX_DETAIL_CHARS:
        detail = detail[: _MAX_DETAIL_CHARS - 1] + "…"
    return detail


# Ordered: an SSH key refusal also prints "Could not read from remote repository", so auth is checked first.
_FAILURE_PATTERNS: tuple[tuple[re.Pattern[str], type[GitError]], ...] = (
    (
        re.compile(
            r"Authentication failed|could not read (Username|Password)|terminal prompts disabled"
            r"|Permission denied \(|Invalid username or password|The requested URL returned error: (401|403)"
            r"|HTTP Basic: Access denied",
            re.IGNORECASE,
        ),
        AuthFailed,
    ),
    (
        re.compile(
            r"does not appear to be a git repository|Could not resolve host|Could not resolve hostname"
            r"|Failed to connect|Connection refused|Connection timed out|Connection reset"
            r"|Network is unreachable|No route to host|unable to access|Could not read from remote repository"
            r"|repository '[^']*' (does not exist|not found)|The requested URL returned error: 404",
            re.IGNORECASE,
        ),
        RemoteUnreachable,
    ),
)


def failure_kind(stderr: str) -> type[GitError]:
    """Which error a failed git command's output describes; plain ``GitError`` when we recognise none."""
    for pattern, kind in _FAILURE_PATTERNS:
        if pattern.search(stderr):
            return kind
    return GitError


# ------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class HttpsCredentials:
    """Basic-auth credentials for an HTTPS remote; for token auth the token is the password."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class SshCredentials:
    """A private key for an SSH remote, and how the remote's host key is checked.

    Without ``known_hosts`` a private file is used, so ``accept-new`` trusts the first key seen and ``yes``
    refuses every host: mount a known_hosts file for real verification.
    """

    private_key: Path
    known_hosts: Path | None = None
    host_key_checking: HostKeyChecking = "yes"


Credentials = HttpsCredentials | SshCredentials


@dataclass(frozen=True)
class GitRemote:
    """The repository and branch the write-back commits to."""

    url: str
    branch: str = DEFAULT_GIT_REF
    credentials: Credentials | None = None

    def __post_init__(self) -> None:
        if not self.url or self.url.startswith("-") or any(c.isspace() for c in self.url):
            raise ValueError(f"{self.url!r} is not a repository URL")
        parts = urlsplit(self.url)
        if parts.scheme.lower() in ("http", "https") and "@" in parts.netloc:
            raise ValueError("put HTTPS credentials in HttpsCredentials, not in the repository URL")
        if not is_valid_branch(self.branch):
            raise ValueError(f"{self.branch!r} is not a branch name")

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a message."""
        return (self.credentials.password,) if isinstance(self.credentials, HttpsCredentials) else ()


def is_valid_branch(name: str) -> bool:
    """Whether ``name`` is a branch git accepts (as ``check-ref-format --branch``) and is not an option."""
    return bool(name) and not name.startswith("-") and _REF_FORBIDDEN.search(name) is None


@dataclass(frozen=True)
class Author:
    """Who a write-back commit is by (author and committer alike)."""

    name: str
    email: str

    def __post_init__(self) -> None:
        for value in (self.name, self.email):
            if not value.strip() or any(c in value for c in "<>\n\r\0"):
                raise ValueError(f"{value!r} cannot be part of a git identity")

    @classmethod
    def parse(cls, text: str) -> Author:
        """Read ``Name <email>``, the form git prints and users configure."""
        match = re.fullmatch(r"\s*([^<>]*?)\s*<([^<>]*)>\s*", text)
        if match is None:
            raise ValueError(f"{text!r} is not of the form 'Name <email>'")
        return cls(match.group(1), match.group(2))

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


DEFAULT_AUTHOR = Author("helmrelease-operator", "helmrelease@localhost")


@dataclass(frozen=True)
class StateLayout:
    """Where a repository's private state lives: the clone and the credential files git is pointed at."""

    root: Path

    @property
    def worktree(self) -> Path:
        return self.root / "worktree"

    @property
    def askpass(self) -> Path:
        return self.root / "askpass.sh"

    @property
    def ssh_key(self) -> Path:
        return self.root / "ssh-key"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"


def ssh_command(key: Path, known_hosts: Path, host_key_checking: HostKeyChecking) -> str:
    """The ``GIT_SSH_COMMAND`` using exactly our key and host list, never prompting (run via sh)."""
    return shlex.join(
        [
            "ssh",
            "-F",
            os.devnull,
            "-i",
            str(key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            f"StrictHostKeyChecking={host_key_checking}",
            "-o",
            "BatchMode=yes",
        ]
    )


def git_environment(
    inherited: Mapping[str, str], layout: StateLayout, credentials: Credentials | None
) -> dict[str, str]:
    """The complete environment of our git processes: isolated from user config, never prompting."""
    env = inherited_environment(inherited)
    env.update(
        HOME=str(layout.root),
        LC_ALL="C",  # English messages, which failure_kind reads
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        GIT_SSH_COMMAND=shlex.join(["ssh", "-F", os.devnull, "-o", "BatchMode=yes"]),
    )
    if isinstance(credentials, HttpsCredentials):
        env.update(
            {
                "GIT_ASKPASS": str(layout.askpass),
                USERNAME_VARIABLE: credentials.username,
                PASSWORD_VARIABLE: credentials.password,
            }
        )
    elif isinstance(credentials, SshCredentials):
        known_hosts = credentials.known_hosts or layout.known_hosts
        env["GIT_SSH_COMMAND"] = ssh_command(layout.ssh_key, known_hosts, credentials.host_key_checking)
    return env


def write_credential_files(layout: StateLayout, credentials: Credentials | None) -> None:
    """Write the files `git_environment` points git at for `credentials` into the existing `layout.root`."""
    if isinstance(credentials, HttpsCredentials):
        write_private_file(layout.askpass, ASKPASS_SCRIPT.encode(), 0o700)
    elif isinstance(credentials, SshCredentials):
        # ssh refuses keys others can read, and mounted Secrets usually are: use a private copy.
        write_private_file(layout.ssh_key, credentials.private_key.read_bytes(), 0o600)
        if credentials.known_hosts is None and not layout.known_hosts.exists():
            write_private_file(layout.known_hosts, b"", 0o600)


# ------------------------------------------------------------------------------------------------------------
# Commit messages


@dataclass(frozen=True)
class ImageUpdate:
    """One tag change, as the commit message describes it."""

    namespace: str
    release: str
    container: str
    image: str
    old_tag: str
    new_tag: str
    policy: str | None = None

    def describe(self) -> str:
        policy = f" ({self.policy})" if self.policy else ""
        return (
            f"{self.namespace}/{self.release} {self.container}: "
            f"{self.image}:{self.old_tag} → {self.new_tag}{policy}"
        )


def commit_message(updates: Sequence[ImageUpdate]) -> str:
    """A subject naming the change (the one image, or how many) and a body with one line per update."""
    if not updates:
        raise ValueError("a commit needs at least one image update")
    if len(updates) == 1:
        only = updates[0]
        subject = f"Update image {only.image} to {only.new_tag} in {only.namespace}/{only.release}"
    else:
        subject = f"Update {len(updates)} images"
    body = "\n".join(update.describe() for update in updates)
    return f"{subject}\n\n{body}"


# ------------------------------------------------------------------------------------------------------------
# Working-tree helpers for edits


@dataclass(frozen=True)
class ChangedFile:
    """The new full text of a file, by its path relative to the repository root (``/``-separated)."""

    path: str
    text: str


ManifestEdit = Callable[[Path], Sequence[ChangedFile]]
"""Reads the fresh working tree at the given root and returns the files it wants changed (unchanged ones
may be included; they are ignored). It runs once per attempt, in a worker thread, so it must work from
the tree it is given and nothing it computed before."""


def checked_relative_path(path: str) -> PurePosixPath:
    """``path`` inside the repository; ``ValueError`` for anything that could leave it or reach .git."""
    relative = PurePosixPath(path)
    if (
        not path
        or relative.is_absolute()
        or "\\" in path
        or any(part in ("..", ".git") for part in relative.parts)
        or relative == PurePosixPath(".")
    ):
        raise ValueError(f"{path!r} is not a file path inside the repository")
    return relative


def _resolve_inside(root: Path, path: str) -> Path:
    """The file ``path`` names under ``root``, refusing symlinks that would lead the write elsewhere."""
    target = root.joinpath(*checked_relative_path(path).parts)
    real_root = root.resolve()
    if target.is_symlink() or not target.parent.resolve().is_relative_to(real_root):
        raise ValueError(f"{path!r} leads outside the repository through a symlink")
    return target


def find_manifests(root: Path, holds: Callable[[str], bool], sub_path: str | None = None) -> list[str]:
    """Sorted relative paths of the YAML files under ``root`` (or ``sub_path``) whose text ``holds`` accepts.

    Symlinks and unreadable or non-UTF-8 files are skipped: we would not edit through them anyway.
    """
    start = _resolve_inside(root, sub_path) if sub_path else root
    found: list[str] = []
    for directory, subdirectories, files in os.walk(start):
        subdirectories[:] = sorted(d for d in subdirectories if d != ".git")
        for name in sorted(files):
            candidate = Path(directory, name)
            if candidate.suffix not in (".yaml", ".yml") or candidate.is_symlink():
                continue
            try:
                text = candidate.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if holds(text):
                found.append(candidate.relative_to(root).as_posix())
    return sorted(found)


def write_changes(root: Path, changes: Iterable[ChangedFile]) -> list[str]:
    """Write the files whose text differs from the tree, byte for byte; return their relative paths."""
    written: list[str] = []
    for change in changes:
        target = _resolve_inside(root, change.path)
        content = change.text.encode("utf-8")
        if target.is_file() and target.read_bytes() == content:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        relative = checked_relative_path(change.path).as_posix()
        if relative not in written:
            written.append(relative)
    return written


# ------------------------------------------------------------------------------------------------------------
# Running git


@dataclass(frozen=True)
class GitOutput:
    """What a finished git command said; whether a non-zero exit is a failure is the caller's call."""

    returncode: int
    stdout: str
    stderr: str


async def run_git(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    input_text: str | None = None,
    executable: str = "git",
    deadline: float | None = None,
) -> GitOutput:
    """Run one git command to completion. Stopped (by `deadline`, or a caller's cancellation or timeout), it
    kills the command's whole process group at once before raising, so no ssh or helper outlives it.

    Raises `TimeoutError` after `deadline` seconds, `FileNotFoundError` when git (or ``cwd``) is missing.
    """
    result = await process.run(
        [executable, *args],
        env=env,
        cwd=cwd,
        stdin=input_text.encode() if input_text is not None else None,
        deadline=deadline,
    )
    return GitOutput(
        result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    )


class PushOutcome(enum.Enum):
    """What a push did for our ref, which decides between done, redo and give up."""

    PUSHED = "pushed"
    OUT_OF_DATE = "out of date"  # the branch moved: fetch, redo, retry
    DECLINED = "declined"  # a hook or branch protection said no: retrying will not help
    FAILED = "failed"  # the push never got an answer about the ref (auth, network, ...)


def push_outcome(returncode: int, porcelain: str) -> PushOutcome:
    """Read ``git push --porcelain``: ref lines are ``flag<TAB>from:to<TAB>summary``, flag ``!`` a refusal."""
    if returncode == 0:
        return PushOutcome.PUSHED
    for line in porcelain.splitlines():
        flag, _, rest = line.partition("\t")
        if flag != "!":
            continue
        if "[remote rejected]" in rest:
            return PushOutcome.DECLINED
        if any(reason in rest for reason in ("fetch first", "non-fast-forward", "stale info")):
            return PushOutcome.OUT_OF_DATE
        return PushOutcome.DECLINED
    return PushOutcome.FAILED


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): doubling, capped."""
    return float(min(maximum, initial * 2 ** (attempt - 1)))


# ------------------------------------------------------------------------------------------------------------
# The repository


@dataclass(frozen=True)
class CommitResult:
    """A write-back commit that is on the remote branch."""

    sha: str
    branch: str
    files: tuple[str, ...]
    push_attempts: int


class GitRepository:
    """A private clone of one branch, kept between cycles and reset to the remote before each change.

    Changes are serialised per instance. Give each remote its own ``state_dir`` (made private to this user).
    """

    def __init__(
        self,
        remote: GitRemote,
        state_dir: Path,
        *,
        timeout: float = 120.0,
        push_attempts: int = 4,
        backoff_initial: float = 1.0,
        backoff_max: float = 15.0,
        inherited_env: Mapping[str, str] | None = None,
        executable: str = "git",
    ) -> None:
        if push_attempts < 1:
            raise ValueError("push_attempts must be at least 1")
        self.remote = remote
        self.layout = StateLayout(state_dir)
        self._timeout = timeout
        self._push_attempts = push_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._executable = executable
        self._env = git_environment(
            os.environ if inherited_env is None else inherited_env, self.layout, remote.credentials
        )
        self._lock = asyncio.Lock()

    @property
    def worktree(self) -> Path:
        return self.layout.worktree

    async def sync(self) -> str:
        """Make the working tree exactly the remote branch head (cloning on first use); return that commit."""
        async with self._lock:
            return await self._sync()

    async def apply_change(
        self, edit: ManifestEdit, message: str, author: Author = DEFAULT_AUTHOR
    ) -> CommitResult | None:
        """Run ``edit`` on the fresh branch head, commit what it changed, push; ``None`` when nothing changed.

        A push refused because the branch moved is retried from a new fetch, running ``edit`` again, up to the
        configured number of attempts; then ``PushRejected``.
        """
        if not message.strip():
            raise ValueError("a commit needs a message")
        async with self._lock:
            for attempt in range(1, self._push_attempts + 1):
                await self._sync()
                files = await asyncio.to_thread(lambda: write_changes(self.worktree, edit(self.worktree)))
                if not files or not await self._stage(files):
                    return None
                sha = await self._commit(message, author)
                pushed = await self._git(
                    "push", "--porcelain", "origin", f"HEAD:refs/heads/{self.remote.branch}"
                )
                outcome = push_outcome(pushed.returncode, pushed.stdout)
                if outcome is PushOutcome.PUSHED:
                    logger.info("pushed %s to %s (%s)", sha[:12], self.remote.branch, ", ".join(files))
                    return CommitResult(sha, self.remote.branch, tuple(files), attempt)
                if outcome is PushOutcome.DECLINED:
                    raise PushRejected(
                        f"{pushed.stdout}\n{pushed.stderr}", attempts=attempt, secrets=self.remote.secrets
                    )
                if outcome is PushOutcome.FAILED:
                    raise self._error("push", pushed)
                if attempt < self._push_attempts:
                    delay = backoff_delay(attempt, self._backoff_initial, self._backoff_max)
                    logger.warning(
                        "branch %s moved during write-back; redoing in %.1fs", self.remote.branch, delay
                    )
                    await asyncio.sleep(delay)
            raise PushRejected(
                f"branch {self.remote.branch} moved on each of {self._push_attempts} attempts",
                attempts=self._push_attempts,
            )

    async def _sync(self) -> str:
        self._prepare_state()
        branch = self.remote.branch
        if await self._has_clone():
            refspec = f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
            await self._checked("fetch", "--quiet", "--depth=1", "--no-tags", "origin", refspec)
        else:
            await self._clone()
        await self._checked("reset", "--hard", "--quiet", f"refs/remotes/origin/{branch}")
        await self._checked("clean", "-ffdx", "--quiet")
        return await self._head()

    def _prepare_state(self) -> None:
        """Create the private state directory and the credential files git is pointed at."""
        root = self.layout.root
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        write_credential_files(self.layout, self.remote.credentials)

    async def _has_clone(self) -> bool:
        """Whether the kept clone serves this remote (a changed URL or a broken clone means a new clone)."""
        if not (self.worktree / ".git").is_dir():
            return False
        origin = await self._git("config", "--get", "remote.origin.url")
        return origin.returncode == 0 and origin.stdout.strip() == self.remote.url

    async def _clone(self) -> None:
        """Clone just the branch head into a scratch directory, then move it in: never use a half clone."""
        partial = self.layout.root / "worktree.partial"
        for stale in (partial, self.worktree):
            await asyncio.to_thread(shutil.rmtree, stale, True)
        await self._checked(
            "clone",
            "--quiet",
            "--depth=1",
            "--single-branch",
            "--no-tags",
            f"--branch={self.remote.branch}",
            "--",
            self.remote.url,
            str(partial),
            cwd=self.layout.root,
        )
        partial.rename(self.worktree)

    async def _stage(self, files: Sequence[str]) -> bool:
        """Stage ``files``; whether the index now differs from HEAD (a rewrite git sees as equal does not)."""
        await self._checked("add", "--", *files)
        diff = await self._git("diff", "--cached", "--quiet")
        if diff.returncode not in (0, 1):
            raise self._error("diff", diff)
        return diff.returncode == 1

    async def _commit(self, message: str, author: Author) -> str:
        identity = {
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": author.name,
            "GIT_COMMITTER_EMAIL": author.email,
        }
        await self._checked(
            "commit", "--quiet", "--no-verify", "--file=-", input_text=message, extra_env=identity
        )
        return await self._head()

    async def _head(self) -> str:
        head = await self._checked("rev-parse", "HEAD")
        return head.stdout.strip()

    async def _checked(
        self,
        *args: str,
        cwd: Path | None = None,
        input_text: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> GitOutput:
        """Run git and turn a non-zero exit into the matching ``GitError``."""
        output = await self._git(*args, cwd=cwd, input_text=input_text, extra_env=extra_env)
        if output.returncode != 0:
            raise self._error(args[0], output)
        return output

    async def _git(
        self,
        *args: str,
        cwd: Path | None = None,
        input_text: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> GitOutput:
        """Run git in the working tree with our environment; only timeouts and a missing git raise."""
        operation = args[0]
        env = {**self._env, **(extra_env or {})}
        try:
            return await run_git(
                args,
                cwd=cwd or self.worktree,
                env=env,
                input_text=input_text,
                executable=self._executable,
                deadline=self._timeout,
            )
        except TimeoutError:
            kind = RemoteUnreachable if operation in ("clone", "fetch", "push") else GitError
            raise kind(operation, f"no result within {self._timeout:g}s") from None
        except FileNotFoundError as error:
            raise GitError(operation, f"cannot run {self._executable}: {error.strerror}") from None

    def _error(self, operation: str, output: GitOutput) -> GitError:
        text = output.stderr or output.stdout
        return failure_kind(text)(operation, text, secrets=self.remote.secrets)
