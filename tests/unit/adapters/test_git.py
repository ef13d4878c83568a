"""Pure parts of git: commit messages, error cleaning and classification (one table for chart fetches and
write-back alike), settings, environment."""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.adapters import helm
from helmrelease.adapters.credentials import BasicCredentials
from helmrelease.adapters.files import checked_relative_path
from helmrelease.adapters.git import (
    ASKPASS_SCRIPT,
    HOST_KEY_ADVICE,
    PASSWORD_VARIABLE,
    REDACTED,
    USERNAME_VARIABLE,
    AuthFailed,
    Author,
    GitError,
    GitOutput,
    GitRemote,
    GitRunner,
    GitTimeout,
    HostKeyRejected,
    ImageUpdate,
    PushOutcome,
    PushRejected,
    RefNotFound,
    RemoteUnreachable,
    SshCredentials,
    StateLayout,
    TransportRefused,
    clean_detail,
    commit_message,
    failure_kind,
    git_environment,
    is_valid_branch,
    leftover_locks,
    push_outcome,
    scrub_secrets,
    ssh_command,
)
from helmrelease.adapters.source_errors import InvalidChartSource

PROMETHEUS = ImageUpdate(
    "monitoring", "prom", "prometheus", "prom/prometheus", "v2.3.1", "v2.3.2", "semver:~2.3"
)
GRAFANA = ImageUpdate("monitoring", "grafana", "grafana", "grafana/grafana", "7.0.0", "7.1.0", "glob:7.*")
ALERTS = ImageUpdate("ops", "alerts", "main", "quay.io/prometheus/alertmanager", "v0.20", "v0.21")


# --- commit messages --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("updates", "expected"),
    [
        pytest.param(
            [PROMETHEUS],
            "Update image prom/prometheus to v2.3.2 in monitoring/prom\n\n"
            "monitoring/prom prometheus: prom/prometheus:v2.3.1 → v2.3.2 (semver:~2.3)",
            id="one-image",
        ),
        pytest.param(
            [PROMETHEUS, GRAFANA, ALERTS],
            "Update 3 images\n\n"
            "monitoring/prom prometheus: prom/prometheus:v2.3.1 → v2.3.2 (semver:~2.3)\n"
            "monitoring/grafana grafana: grafana/grafana:7.0.0 → 7.1.0 (glob:7.*)\n"
            "ops/alerts main: quay.io/prometheus/alertmanager:v0.20 → v0.21",
            id="several-images-one-line-each-policy-only-when-known",
        ),
    ],
)
def test_commit_message(updates: list[ImageUpdate], expected: str) -> None:
    assert commit_message(updates) == expected


def test_commit_message_needs_an_update() -> None:
    with pytest.raises(ValueError, match="at least one"):
        commit_message([])


# --- secrets and error messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        pytest.param(
            "fatal: bad token s3cr3t-t0k3n", ["s3cr3t-t0k3n"], f"fatal: bad token {REDACTED}", id="known"
        ),
        pytest.param(
            "unable to access 'https://bot:hunter2@git.example.com/r.git/'",
            [],
            f"unable to access 'https://{REDACTED}@git.example.com/r.git/'",
            id="http-userinfo",
        ),
        pytest.param(
            "to https://ghp_abcdef@github.com/o/r",
            [],
            f"to https://{REDACTED}@github.com/o/r",
            id="http-token-as-user",
        ),
        pytest.param(
            "ssh://git:pw@host/r.git and ssh://git@host/r.git",
            [],
            f"ssh://git:{REDACTED}@host/r.git and ssh://git@host/r.git",
            id="ssh-password-only",
        ),
        pytest.param("abcabc", ["abc", "abcabc"], REDACTED, id="longest-secret-first"),
        pytest.param(
            "nothing to hide", ["", "x-not-there"], "nothing to hide", id="empty-and-absent-secrets"
        ),
    ],
)
def test_scrub_secrets(text: str, secrets: list[str], expected: str) -> None:
    assert scrub_secrets(text, secrets) == expected


@given(
    before=st.text(),
    after=st.text(),
    secret=st.text(alphabet=st.characters(categories=["L", "N"]), min_size=4),
)
def test_scrubbed_text_never_contains_the_secret(before: str, after: str, secret: str) -> None:
    assert secret not in scrub_secrets(f"{before}{secret}{after}", [secret])


@given(
    user=st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True),
    password=st.from_regex(r"[A-Za-z0-9]{6,20}", fullmatch=True),
)
def test_urls_lose_their_passwords(user: str, password: str) -> None:
    for scheme in ("https", "http", "ssh", "git+ssh"):
        scrubbed = scrub_secrets(f"fatal: cannot reach {scheme}://{user}:{password}@host/repo.git/")
        assert f":{password}@" not in scrubbed
        assert f"{REDACTED}@host/repo.git/" in scrubbed


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        pytest.param(
            "Cloning into 'x'...\n"
            "fatal: '/nonexistent/x.git' does not appear to be a git repository\n"
            "fatal: Could not read from remote repository.\n\n"
            "Please make sure you have the correct access rights\nand the repository exists.\n",
            "'/nonexistent/x.git' does not appear to be a git repository; "
            "Could not read from remote repository.",
            id="stock-advice-dropped",
        ),
        pytest.param(
            "To file:///r.git\n!\tHEAD:refs/heads/main\t[remote rejected] (pre-receive hook declined)\nDone\n"
            "remote: protected branch        \nerror: failed to push some refs to 'file:///r.git'\n"
            "hint: Updates were rejected\n",
            "! HEAD:refs/heads/main [remote rejected] (pre-receive hook declined); remote: protected branch; "
            "failed to push some refs to 'file:///r.git'",
            id="push-refusal-keeps-ref-and-remote-lines",
        ),
        pytest.param(
            "ssh: connect to host h port 22: Connection refused\r\n"
            "fatal: Could not read from remote repository.\n",
            "ssh: connect to host h port 22: Connection refused; Could not read from remote repository.",
            id="helper-line-before-git-line",
        ),
        pytest.param(
            "warning: Could not find remote branch x to clone.\n"
            "fatal: Remote branch x not found in upstream origin\n",
            "Remote branch x not found in upstream origin",
            id="warnings-dropped",
        ),
        pytest.param("something odd\nhint: try harder\n", "something odd", id="hints-dropped"),
        pytest.param("", "", id="empty"),
    ],
)
def test_clean_detail(output: str, expected: str) -> None:
    assert clean_detail(output) == expected


def test_clean_detail_is_bounded() -> None:
    detail = clean_detail("\n".join(f"fatal: {'x' * 300} {n}" for n in range(10)))
    assert len(detail) <= 500
    assert detail.endswith("…")


# ssh 9.2's words (OpenSSH, StrictHostKeyChecking=yes) for a server not in known_hosts and for one whose key changed.
UNKNOWN_HOST_KEY = (
    "No ED25519 host key is known for [127.0.0.1]:40123 and you have requested strict checking.\r\n"
    "Host key verification failed.\r\n"
)
CHANGED_HOST_KEY = (
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
    "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n"
    "Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n"
    "It is also possible that a host key has just been changed.\n"
    "The fingerprint for the ED25519 key sent by the remote host is\n"
    "SHA256:3p0m2cH0m8jT3w3H6b0d0A8ZbkVY2aZ8m0T0M4h5c9Q.\n"
    "Please contact your system administrator.\n"
    "Add correct host key in /tmp/known_hosts to get rid of this message.\n"
    "Offending ED25519 key in /tmp/known_hosts:1\n"
    "Host key for [127.0.0.1]:40123 has changed and you have requested strict checking.\n"
    "Host key verification failed.\n"
)


@pytest.mark.parametrize(
    ("stderr", "said"),
    [
        pytest.param(
            UNKNOWN_HOST_KEY,
            "No ED25519 host key is known for [127.0.0.1]:40123 and you have requested strict checking.; "
            "Host key verification failed.",
            id="unknown",
        ),
        pytest.param(
            CHANGED_HOST_KEY,
            "Offending ED25519 key in /tmp/known_hosts:1; "
            "Host key for [127.0.0.1]:40123 has changed and you have requested strict checking.; "
            "Host key verification failed.",
            id="changed",
        ),
    ],
)
def test_a_refused_host_key_says_which_and_what_to_do(stderr: str, said: str) -> None:
    output = GitOutput(128, "", stderr + "fatal: Could not read from remote repository.\n")
    error = GitRunner({}, Path("/nonexistent")).error("ls-remote", output)
    assert isinstance(error, HostKeyRejected)
    assert str(error) == f"git ls-remote failed: {said}; {HOST_KEY_ADVICE}"


# stderr captured from git 2.39 against a local bare repository, git http-backend and unreachable ports; the
# third column is the chart source kind the same error is, which is what a chart fetch reports.
@pytest.mark.parametrize(
    ("stderr", "kind", "source_kind"),
    [
        pytest.param(
            "fatal: Authentication failed for 'https://h/r.git/'",
            AuthFailed,
            helm.Unauthorized,
            id="https-auth",
        ),
        pytest.param(
            "fatal: could not read Username for 'https://h': terminal prompts disabled",
            AuthFailed,
            helm.Unauthorized,
            id="no-creds",
        ),
        pytest.param(
            "git@h: Permission denied (publickey).\nfatal: Could not read from remote repository.",
            AuthFailed,
            helm.Unauthorized,
            id="ssh-key-refused-before-generic-unreachable",
        ),
        pytest.param(
            "fatal: unable to access 'https://h/r/': The requested URL returned error: 403",
            AuthFailed,
            helm.Unauthorized,
            id="403",
        ),
        pytest.param(
            "fatal: unable to access 'https://h/': Could not resolve host: h",
            RemoteUnreachable,
            helm.RepositoryUnreachable,
            id="dns",
        ),
        pytest.param(
            "fatal: unable to access 'https://127.0.0.1:1/x.git/': Failed to connect to 127.0.0.1 port 1 after 0 ms:"
            " Couldn't connect to server",
            RemoteUnreachable,
            helm.RepositoryUnreachable,
            id="refused",
        ),
        pytest.param(
            "fatal: unable to connect to 127.0.0.1:\n127.0.0.1[0: 127.0.0.1]: errno=Connection refused\n",
            RemoteUnreachable,
            helm.RepositoryUnreachable,
            id="git-protocol-refused",
        ),
        pytest.param(
            "ssh: connect to host 127.0.0.1 port 1: Connection refused\n"
            "fatal: Could not read from remote repository.\n\n"
            "Please make sure you have the correct access rights\nand the repository exists.",
            RemoteUnreachable,
            helm.RepositoryUnreachable,
            id="ssh-refused",
        ),
        pytest.param(
            "fatal: '/nope' does not appear to be a git repository",
            RemoteUnreachable,
            helm.RepositoryUnreachable,
            id="no-repo",
        ),
        pytest.param(
            "fatal: repository 'http://127.0.0.1:46109/missing.git/' not found",
            RemoteUnreachable,
            helm.RepositoryUnreachable,
            id="no-such-repository-over-http",
        ),
        pytest.param(
            "ERROR: Repository not found.\nfatal: Could not read from remote repository.",
            RemoteUnreachable,
            helm.RepositoryUnreachable,
            id="ssh-no-repo",
        ),
        pytest.param(
            "fatal: couldn't find remote ref nosuch", RefNotFound, helm.ChartNotFound, id="no-such-ref"
        ),
        pytest.param(
            "fatal: remote error: upload-pack: not our ref 1234",
            RefNotFound,
            helm.ChartNotFound,
            id="not-our-ref",
        ),
        pytest.param(
            "fatal: Remote branch nope not found in upstream origin",
            RefNotFound,
            helm.ChartNotFound,
            id="missing-branch",
        ),
        pytest.param(
            "fatal: transport 'file' not allowed",
            TransportRefused,
            InvalidChartSource,
            id="transport-refused",
        ),
        pytest.param(
            UNKNOWN_HOST_KEY + "fatal: Could not read from remote repository.\n",
            HostKeyRejected,
            helm.Unauthorized,
            id="ssh-unknown-host-key",
        ),
        pytest.param(
            CHANGED_HOST_KEY + "fatal: Could not read from remote repository.\n",
            HostKeyRejected,
            helm.Unauthorized,
            id="ssh-changed-host-key",
        ),
        pytest.param("error: pathspec 'x' did not match", GitError, helm.HelmError, id="local"),
        pytest.param("fatal: something new", GitError, helm.HelmError, id="unrecognised"),
    ],
)
def test_failure_kind(stderr: str, kind: type[GitError], source_kind: type[helm.HelmError]) -> None:
    assert failure_kind(stderr) is kind
    assert issubclass(kind, source_kind)
    error = kind("fetch", stderr, returncode=128)
    assert (error.operation, error.returncode) == ("git fetch", 128)


@pytest.mark.parametrize("kind", [AuthFailed, RemoteUnreachable, GitTimeout])
def test_an_unreachable_or_unauthorized_remote_is_never_a_missing_chart(kind: type[GitError]) -> None:
    """The chart fetch's first git command is ls-remote; a remote it cannot read is not a chart that is not there."""
    assert not issubclass(kind, helm.ChartNotFound)
    assert issubclass(kind, helm.HelmError)  # what the reconciler catches around a chart fetch


def test_git_error_message_is_clean() -> None:
    error = AuthFailed(
        "fetch", "fatal: Authentication failed for 'https://x:tok@h/r.git/'\nhint: x", secrets=["tok"]
    )
    assert str(error) == f"git fetch failed: Authentication failed for 'https://{REDACTED}@h/r.git/'"
    assert isinstance(error, GitError)
    assert str(GitError("reset", "")) == "git reset failed"


def test_push_rejected_counts_attempts() -> None:
    error = PushRejected("branch main moved on each of 3 attempts", attempts=3)
    assert (error.attempts, error.operation, str(error)) == (
        3,
        "git push",
        "git push failed: branch main moved on each of 3 attempts",
    )


# --- push outcome and retries -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returncode", "porcelain", "outcome"),
    [
        pytest.param(
            0, "To r\n \tHEAD:refs/heads/main\tabc..def\nDone\n", PushOutcome.PUSHED, id="fast-forward"
        ),
        pytest.param(
            1,
            "To r\n!\tHEAD:refs/heads/main\t[rejected] (fetch first)\nDone\n",
            PushOutcome.OUT_OF_DATE,
            id="fetch-first",
        ),
        pytest.param(
            1, "!\tHEAD:refs/heads/main\t[rejected] (non-fast-forward)\n", PushOutcome.OUT_OF_DATE, id="nff"
        ),
        pytest.param(
            1, "!\tHEAD:refs/heads/main\t[rejected] (stale info)\n", PushOutcome.OUT_OF_DATE, id="stale"
        ),
        pytest.param(
            1,
            "!\tHEAD:refs/heads/main\t[remote rejected] (pre-receive hook declined)\n",
            PushOutcome.DECLINED,
            id="hook",
        ),
        pytest.param(
            1,
            "!\tHEAD:refs/heads/main\t[remote rejected] (protected branch hook declined)\n",
            PushOutcome.DECLINED,
            id="protected",
        ),
        pytest.param(128, "", PushOutcome.FAILED, id="no-ref-status-at-all"),
    ],
)
def test_push_outcome(returncode: int, porcelain: str, outcome: PushOutcome) -> None:
    assert push_outcome(returncode, porcelain) is outcome


# --- settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        pytest.param("main", True, id="main"),
        pytest.param("release/v1.2", True, id="nested"),
        pytest.param("", False, id="empty"),
        pytest.param("-f", False, id="option-like"),
        pytest.param("a..b", False, id="dot-dot"),
        pytest.param("a b", False, id="space"),
        pytest.param("a:b", False, id="colon-would-split-a-refspec"),
        pytest.param("x.lock", False, id="lock-suffix"),
        pytest.param(".hidden", False, id="leading-dot"),
        pytest.param("a/", False, id="trailing-slash"),
        pytest.param("a@{1}", False, id="reflog-syntax"),
    ],
)
def test_is_valid_branch(name: str, valid: bool) -> None:
    assert is_valid_branch(name) is valid


@pytest.mark.parametrize(
    ("url", "branch", "message"),
    [
        pytest.param("https://bot:pw@h/r.git", "main", "BasicCredentials", id="https-password-in-url"),
        pytest.param("https://token@h/r.git", "main", "BasicCredentials", id="https-token-in-url"),
        pytest.param("--upload-pack=evil", "main", "not a repository URL", id="option-url"),
        pytest.param("", "main", "not a repository URL", id="empty-url"),
        pytest.param("https://h/r.git", "-x", "not a branch", id="bad-branch"),
    ],
)
def test_remote_rejects(url: str, branch: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GitRemote(url, branch)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://git.example.com/team/r.git", id="https"),
        pytest.param("git@github.com:team/r.git", id="scp-like-ssh"),
        pytest.param("ssh://git@host:2222/r.git", id="ssh-url"),
        pytest.param("file:///srv/r.git", id="file"),
    ],
)
def test_remote_accepts(url: str) -> None:
    assert GitRemote(url).url == url


def test_only_https_passwords_are_secrets() -> None:
    assert GitRemote("https://h/r", credentials=BasicCredentials("bot", "pw")).secrets == ("pw",)
    assert GitRemote("git@h:r", credentials=SshCredentials(Path("/k"))).secrets == ()
    assert "pw" not in repr(BasicCredentials("bot", "pw"))


@pytest.mark.parametrize(
    ("text", "author"),
    [
        pytest.param(
            "helmrelease-operator <helmrelease@localhost>",
            Author("helmrelease-operator", "helmrelease@localhost"),
            id="default",
        ),
        pytest.param(
            "  Jane Q. Doe   <jane@example.com> ", Author("Jane Q. Doe", "jane@example.com"), id="spaces"
        ),
    ],
)
def test_author_parse(text: str, author: Author) -> None:
    assert Author.parse(text) == author


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("no email", id="no-email"),
        pytest.param("<a@b>", id="no-name"),
        pytest.param("a <b> <c>", id="two-emails"),
        pytest.param("a <>", id="empty-email"),
    ],
)
def test_author_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"git identity|Name <email>"):
        Author.parse(text)


_IDENTITY_PART = st.text(
    alphabet=st.characters(blacklist_characters="<>\n\r\0", blacklist_categories=["Cs"]), min_size=1
).filter(lambda s: s == s.strip() and s.strip() != "")


@given(name=_IDENTITY_PART, email=_IDENTITY_PART)
def test_author_round_trips(name: str, email: str) -> None:
    author = Author(name, email)
    assert Author.parse(str(author)) == author


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("releases/prom.yaml", PurePosixPath("releases/prom.yaml"), id="plain"),
        pytest.param("./a//b.yaml", PurePosixPath("a/b.yaml"), id="normalised"),
    ],
)
def test_checked_relative_path(path: str, expected: PurePosixPath) -> None:
    assert checked_relative_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("", id="empty"),
        pytest.param(".", id="root"),
        pytest.param("/etc/passwd", id="absolute"),
        pytest.param("../outside.yaml", id="parent"),
        pytest.param("a/../../b", id="parent-later"),
        pytest.param(".git/config", id="git-dir"),
        pytest.param("sub/.git/hooks/pre-commit", id="nested-git-dir"),
        pytest.param("a\\b.yaml", id="backslash"),
    ],
)
def test_checked_relative_path_rejects(path: str) -> None:
    with pytest.raises(ValueError, match="inside the repository"):
        checked_relative_path(path)


# --- environment ------------------------------------------------------------------------------------------

LAYOUT = StateLayout(Path("/state"))
INHERITED = {
    "PATH": "/usr/bin",
    "HTTPS_PROXY": "http://proxy:3128",
    "AWS_SECRET_ACCESS_KEY": "x",
    "HOME": "/root",
}


def test_environment_is_isolated_and_never_prompts() -> None:
    env = git_environment(INHERITED, LAYOUT, None)
    assert env["PATH"] == "/usr/bin"
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["HOME"] == "/state"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null"
    assert env["LC_ALL"] == "C"
    assert "BatchMode=yes" in env["GIT_SSH_COMMAND"]
    assert "GIT_ASKPASS" not in env


def test_https_credentials_reach_git_only_through_askpass_variables() -> None:
    env = git_environment(INHERITED, LAYOUT, BasicCredentials("bot", "s3cr3t"))
    assert env["GIT_ASKPASS"] == "/state/askpass.sh"
    assert (env[USERNAME_VARIABLE], env[PASSWORD_VARIABLE]) == ("bot", "s3cr3t")
    assert [name for name, value in env.items() if "s3cr3t" in value] == [PASSWORD_VARIABLE]
    assert "s3cr3t" not in ASKPASS_SCRIPT


def test_askpass_script_answers_from_the_environment() -> None:
    assert ASKPASS_SCRIPT.startswith("#!/bin/sh\n")
    assert f'"${USERNAME_VARIABLE}"' in ASKPASS_SCRIPT
    assert f'"${PASSWORD_VARIABLE}"' in ASKPASS_SCRIPT


@pytest.mark.parametrize(
    ("credentials", "known_hosts"),
    [
        pytest.param(
            SshCredentials(Path("/secret/id"), host_key_checking="accept-new"), "/state/known_hosts", id="own"
        ),
        pytest.param(
            SshCredentials(Path("/secret/id"), Path("/mnt/known hosts")), "/mnt/known hosts", id="mounted"
        ),
    ],
)
def test_ssh_credentials_use_the_private_key_copy(credentials: SshCredentials, known_hosts: str) -> None:
    env = git_environment(INHERITED, LAYOUT, credentials)
    argv = shlex.split(env["GIT_SSH_COMMAND"])
    assert argv[0] == "ssh"
    assert argv[argv.index("-i") + 1] == "/state/ssh-key"
    options = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"]
    assert "IdentitiesOnly=yes" in options
    assert f"UserKnownHostsFile={known_hosts}" in options
    assert f"StrictHostKeyChecking={credentials.host_key_checking}" in options
    assert "GIT_ASKPASS" not in env


def test_ssh_command_quotes_paths_for_the_shell_git_runs_it_with() -> None:
    command = ssh_command(Path("/a b/key"), Path("/c'd/hosts"), "yes")
    assert shlex.split(command)[:5] == ["ssh", "-F", "/dev/null", "-i", "/a b/key"]
    assert "UserKnownHostsFile=/c'd/hosts" in shlex.split(command)


@pytest.mark.parametrize(
    ("files", "locks"),
    [
        pytest.param(
            ["HEAD", "index", "refs/heads/main", "objects/pack/pack-1.pack"], (), id="a-clean-clone"
        ),
        pytest.param(["index", "index.lock"], ("index.lock",), id="killed-while-writing-the-index"),
        pytest.param(
            ["refs/heads/main.lock", "HEAD.lock"], ("HEAD.lock", "refs/heads/main.lock"), id="a-ref-update"
        ),
        pytest.param(["shallow.lock", "shallow"], ("shallow.lock",), id="a-shallow-fetch"),
        pytest.param(["refs/remotes/origin/main.lock"], ("refs/remotes/origin/main.lock",), id="a-fetch"),
        pytest.param(["hooks/pre-commit.sample", "refs/heads/locked"], (), id="lock-in-a-name-is-no-lock"),
    ],
)
def test_leftover_locks_are_the_files_a_killed_git_left(files: list[str], locks: tuple[str, ...]) -> None:
    assert leftover_locks(PurePosixPath(file) for file in files) == locks
