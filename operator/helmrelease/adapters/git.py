"""git for the operator: the one way git runs (`GitRunner`), its failures classified once, and the write-back
of image updates (keep a clone, edit, commit, push; redo the edit if someone pushed first).

Only the ``git`` CLI is used, always through `process.run` with an argument list (never a shell) and an
environment we build ourselves, so the user's global config, credential helpers and terminal prompts never take
part. Credentials never appear in a URL, an argument or a message: HTTPS passwords reach git through a
``GIT_ASKPASS`` script that reads them from the environment, SSH keys through ``GIT_SSH_COMMAND``.

A failed command becomes the `GitError` its output describes (`failure_kind`). Those errors belong to the chart
source family of `adapters.source_errors` (an `AuthFailed` is also an `Unauthorized`, and so on), so the chart
fetcher raises them unchanged and write-back catches them as `GitError`.

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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urlsplit

from helmrelease.adapters import process
from helmrelease.adapters.backoff import backoff_delay
from helmrelease.adapters.credentials import BasicCredentials
from helmrelease.adapters.files import checked_relative_path, resolve_inside
from helmrelease.adapters.helm import ChartNotFound, HelmError, RepositoryUnreachable, Timeout, Unauthorized
from helmrelease.adapters.process import inherited_environment, write_private_file
from helmrelease.adapters.source_errors import InvalidChartSource
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


class GitError(HelmError):
    """A git command failed. The message is short, without git's hints, and never carries a credential.

    `operation` is ``git <command>``; the message reads ``git <command> failed: <detail>``.
    """

    def __init__(
        self, operation: str, detail: str, *, returncode: int | None = None, secrets: Iterable[str] = ()
    ) -> None:
        cleaned = clean_detail(detail, secrets)
        super().__init__(f"git {operation}", cleaned, returncode)
        self.args = (f"git {operation} failed: {cleaned}" if cleaned else f"git {operation} failed",)


class AuthFailed(GitError, Unauthorized):
    """The remote refused our credentials (or we had none and it wanted some)."""


class HostKeyRejected(GitError, Unauthorized):
    """ssh did not trust the server: its host key is not the one known_hosts has for it, or there is none."""


class RemoteUnreachable(GitError, RepositoryUnreachable):
    """The remote could not be reached or does not exist at that address."""


class RefNotFound(GitError, ChartNotFound):
    """The remote has no such branch, tag or commit."""


class TransportRefused(GitError, InvalidChartSource):
    """git refused the remote's transport: it is not one of the allowed ones (``GIT_ALLOW_PROTOCOL``)."""


class GitTimeout(GitError, Timeout):
    """git gave no result within our deadline and was stopped, with everything it started."""


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
# Refusals and missing refs are only ever said by a remote that answered, so they come before both.
_FAILURE_PATTERNS: tuple[tuple[re.Pattern[str], type[GitError]], ...] = (
    (re.compile(r"transport '[^']+' not allowed", re.IGNORECASE), TransportRefused),
    # ssh's own refusal, before it said anything to the server: ahead of "Could not read from remote repository".
    (re.compile(r"Host key verification failed", re.IGNORECASE), HostKeyRejected),
    (
        re.compile(
            r"couldn't find remote ref|not our ref|Remote branch \S+ not found in upstream", re.IGNORECASE
        ),
        RefNotFound,
    ),
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


_HOST_KEY_LINE = re.compile(
    r"^(No \S+ host key is known for|Host key for|Offending \S+ key in|Host key verification failed)"
)
HOST_KEY_ADVICE = "the server's SSH host key must be in the known_hosts given (--git-known-hosts)"


def host_key_detail(stderr: str) -> str:
    """What ssh said about the host key, without its banner of @ signs, and what to do about it."""
    said = [line.strip() for line in stderr.splitlines() if _HOST_KEY_LINE.match(line.strip())]
    return "; ".join([*dict.fromkeys(said), HOST_KEY_ADVICE])


def failure_kind(stderr: str) -> type[GitError]:
    """Which error a failed git command's output describes; plain ``GitError`` when we recognise none."""
    for pattern, kind in _FAILURE_PATTERNS:
        if pattern.search(stderr):
            return kind
    return GitError


# ------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class SshCredentials:
    """A private key for an SSH remote, and how the remote's host key is checked.

    Without ``known_hosts`` a private file is used, so ``accept-new`` trusts the first key seen and ``yes``
    refuses every host: mount a known_hosts file for real verification.
    """

    private_key: Path
    known_hosts: Path | None = None
    host_key_checking: HostKeyChecking = "yes"


Credentials = BasicCredentials | SshCredentials
"""How git authenticates: a username and password (or token) over HTTPS, or an SSH key."""


def credential_secrets(credentials: Credentials | None) -> tuple[str, ...]:
    """Values of ``credentials`` that must never appear in a message."""
    return (credentials.password,) if isinstance(credentials, BasicCredentials) else ()


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
            raise ValueError("put HTTPS credentials in BasicCredentials, not in the repository URL")
        if not is_valid_branch(self.branch):
            raise ValueError(f"{self.branch!r} is not a branch name")

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a message."""
        return credential_secrets(self.credentials)


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
    if isinstance(credentials, BasicCredentials):
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
    if isinstance(credentials, BasicCredentials):
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


def write_changes(root: Path, changes: Iterable[ChangedFile]) -> list[str]:
    """Write the files whose text differs from the tree, byte for byte; return their relative paths."""
    written: list[str] = []
    for change in changes:
        target = resolve_inside(root, change.path)
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


@dataclass(frozen=True)
class GitRunner:
    """How every git command of the operator runs: in `cwd` with exactly `env`, stopped after `deadline` seconds,
    its failures raised as the `GitError` their output describes, with `secrets` scrubbed from every message."""

    env: Mapping[str, str]
    cwd: Path
    executable: str = "git"
    deadline: float | None = None
    secrets: tuple[str, ...] = ()

    async def output(
        self,
        *args: str,
        cwd: Path | None = None,
        input_text: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> GitOutput:
        """Run one git command to completion, whatever its exit code. Stopped (by the deadline, or a caller's
        cancellation or timeout), it kills the command's whole process group at once before raising, so no ssh
        or helper outlives it.

        Raises `GitTimeout` after the deadline, `GitError` when git (or the directory) is missing.
        """
        operation = args[0]
        try:
            result = await process.run(
                [self.executable, *args],
                env={**self.env, **(extra_env or {})},
                cwd=cwd or self.cwd,
                stdin=input_text.encode() if input_text is not None else None,
                deadline=self.deadline,
            )
        except TimeoutError:
            raise GitTimeout(operation, f"no result within {self.deadline:g}s") from None
        except FileNotFoundError as error:
            raise GitError(operation, f"cannot run {self.executable}: {error.strerror}") from None
        return GitOutput(
            result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
        )

    async def run(
        self,
        *args: str,
        cwd: Path | None = None,
        input_text: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> GitOutput:
        """`output`, with a non-zero exit raised as the matching `GitError`."""
        output = await self.output(*args, cwd=cwd, input_text=input_text, extra_env=extra_env)
        if output.returncode != 0:
            raise self.error(args[0], output)
        return output

    def error(self, operation: str, output: GitOutput) -> GitError:
        """The error a failed command's output describes."""
        text = output.stderr or output.stdout
        kind = failure_kind(text)
        if kind is HostKeyRejected:
            text = host_key_detail(text)
        return kind(operation, text, returncode=output.returncode, secrets=self.secrets)


class PushOutcome(enum.Enum):
    """What a push did for our ref, which decides between done, redo and give up."""

    PUSHED = "pushed"
    OUT_OF_DATE = "out of date"  # the branch moved: fetch, redo, retry
    DECLINED = "declined"  # a hook or branch protection said no: retrying will not help
    FAILED = "failed"  # the push never got an answer about the ref (auth, network, ...)


def leftover_locks(git_files: Iterable[PurePosixPath]) -> tuple[str, ...]:
    """The lock files among ``git_files`` (paths inside a ``.git`` directory), sorted.

    git takes ``index.lock``, ``HEAD.lock``, ``shallow.lock``, ``refs/.../<branch>.lock`` and the like while it
    changes a file and renames it into place when done; a git killed meanwhile (the sidecar's container
    SIGKILLed, a command stopped by its deadline) leaves the lock behind, and every later git command that needs
    the file fails with "File exists". No ref may end in ``.lock``, so every such name is a lock.
    """
    return tuple(sorted(path.as_posix() for path in git_files if path.suffix == ".lock"))


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


# ------------------------------------------------------------------------------------------------------------
# The repository


#: A callback given the sha of each commit before it is pushed.
BeforePush = Callable[[str], Awaitable[None]]

#: How far back `GitRepository.branch_holds` looks for a commit: pushes by others since ours are few.
BRANCH_HOLDS_DEPTH = 64


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
        self._push_attempts = push_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._git = GitRunner(
            git_environment(
                os.environ if inherited_env is None else inherited_env, self.layout, remote.credentials
            ),
            self.layout.worktree,
            executable,
            timeout,
            remote.secrets,
        )
        self._lock = asyncio.Lock()

    @property
    def worktree(self) -> Path:
        return self.layout.worktree

    @property
    def branch(self) -> str:
        return self.remote.branch

    async def sync(self) -> str:
        """Make the working tree exactly the remote branch head (cloning on first use); return that commit."""
        async with self._lock:
            return await self._sync()

    async def apply_change(
        self,
        edit: ManifestEdit,
        message: str,
        author: Author = DEFAULT_AUTHOR,
        before_push: BeforePush | None = None,
    ) -> CommitResult | None:
        """Run ``edit`` on the fresh branch head, commit what it changed, push; ``None`` when nothing changed.

        A push refused because the branch moved is retried from a new fetch, running ``edit`` again, up to the
        configured number of attempts; then ``PushRejected``. ``before_push`` is given each commit about to be
        pushed (a journal records it, so a restart can tell whether the push it never heard of landed).
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
                if before_push is not None:
                    await before_push(sha)
                pushed = await self._git.output(
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
                    raise self._git.error("push", pushed)
                if attempt < self._push_attempts:
                    delay = backoff_delay(attempt - 1, self._backoff_initial, self._backoff_max)
                    logger.warning(
                        "branch %s moved during write-back; redoing in %.1fs", self.remote.branch, delay
                    )
                    await asyncio.sleep(delay)
            raise PushRejected(
                f"branch {self.remote.branch} moved on each of {self._push_attempts} attempts",
                attempts=self._push_attempts,
            )

    async def branch_holds(self, sha: str, depth: int = BRANCH_HOLDS_DEPTH) -> bool:
        """Whether commit ``sha`` is one of the last ``depth`` commits of the remote branch (a push we never
        heard the answer of landed); raises ``GitError`` when the remote cannot tell us."""
        async with self._lock:
            await self._sync()
            branch = self.remote.branch
            refspec = f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
            await self._git.run("fetch", "--quiet", f"--depth={depth}", "--no-tags", "origin", refspec)
            listed = await self._git.run("rev-list", f"--max-count={depth}", f"refs/remotes/origin/{branch}")
            return sha in listed.stdout.split()

    async def _sync(self) -> str:
        self._prepare_state()
        branch = self.remote.branch
        if await self._has_clone():
            refspec = f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
            await self._git.run("fetch", "--quiet", "--depth=1", "--no-tags", "origin", refspec)
        else:
            await self._clone()
        await self._git.run("reset", "--hard", "--quiet", f"refs/remotes/origin/{branch}")
        await self._git.run("clean", "-ffdx", "--quiet")
        return await self._head()

    def _prepare_state(self) -> None:
        """Create the private state directory and the credential files git is pointed at."""
        root = self.layout.root
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        write_credential_files(self.layout, self.remote.credentials)

    async def _has_clone(self) -> bool:
        """Whether the kept clone serves this remote (a changed URL or a broken clone means a new clone).

        A clone holding lock files was left by a git command that was killed midway: none of ours runs now
        (they are serialised and each is waited for, or killed, before the next), and what that command left
        half done is unknown, so it is cloned again rather than repaired.
        """
        git_dir = self.worktree / ".git"
        if not git_dir.is_dir():
            return False
        locks = await asyncio.to_thread(
            lambda: leftover_locks(
                PurePosixPath(path.relative_to(git_dir)) for path in git_dir.rglob("*.lock")
            )
        )
        if locks:
            logger.warning(
                "the git clone in %s holds %s, left by a git command that was stopped midway; cloning again",
                self.worktree,
                ", ".join(locks),
            )
            return False
        origin = await self._git.output("config", "--get", "remote.origin.url")
        return origin.returncode == 0 and origin.stdout.strip() == self.remote.url

    async def _clone(self) -> None:
        """Clone just the branch head into a scratch directory, then move it in: never use a half clone."""
        partial = self.layout.root / "worktree.partial"
        for stale in (partial, self.worktree):
            await asyncio.to_thread(shutil.rmtree, stale, True)
        await self._git.run(
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
        await self._git.run("add", "--", *files)
        diff = await self._git.output("diff", "--cached", "--quiet")
        if diff.returncode not in (0, 1):
            raise self._git.error("diff", diff)
        return diff.returncode == 1

    async def _commit(self, message: str, author: Author) -> str:
        identity = {
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": author.name,
            "GIT_COMMITTER_EMAIL": author.email,
        }
        await self._git.run(
            "commit", "--quiet", "--no-verify", "--file=-", input_text=message, extra_env=identity
        )
        return await self._head()

    async def _head(self) -> str:
        head = await self._git.run("rev-parse", "HEAD")
        return head.stdout.strip()
