"""Per-release registry credentials: Secret parsing, precedence, missing pieces and one read per cycle."""

from __future__ import annotations

import base64
import json

import pytest
from tests.unit.automation.fakes import FakeKube, release

from helmrelease.adapters.kube import Forbidden
from helmrelease.adapters.registry import BasicCredentials, CredentialStore, DockerConfigError
from helmrelease.automation.credentials import CycleCredentials, PullSecretError, store_from_secret_data
from helmrelease.automation.watched import WatchedRelease, read_release
from helmrelease.images.reference import CanonicalName

HOST = "reg.example.com"
APP = CanonicalName(HOST, "team/app")


def dockerconfig(username: str, password: str, host: str = HOST) -> str:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": auth}}})


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            {".dockerconfigjson": dockerconfig("a", "b")}, BasicCredentials("a", "b"), id="dockerconfigjson"
        ),
        pytest.param(
            {".dockercfg": json.dumps({HOST: {"username": "c", "password": "d"}})},
            BasicCredentials("c", "d"),
            id="legacy-dockercfg",
        ),
        pytest.param({".dockerconfigjson": json.dumps({"auths": {}})}, None, id="no-entries"),
    ],
)
def test_store_from_secret_data(data: dict[str, str], expected: BasicCredentials | None) -> None:
    assert store_from_secret_data(data).credentials_for(APP) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({".dockerconfigjson": "{nope"}, ".dockerconfigjson is not JSON", id="not-json"),
        pytest.param({".dockerconfigjson": "[]"}, "is not a JSON object", id="not-an-object"),
        pytest.param({"password": "x"}, "none of the keys .dockerconfigjson, .dockercfg", id="wrong-keys"),
    ],
)
def test_unusable_secret_data(data: dict[str, str], message: str) -> None:
    with pytest.raises(DockerConfigError, match=message):
        store_from_secret_data(data)


def kube_with(**secrets: str) -> FakeKube:
    kube = FakeKube()
    for name, config in secrets.items():
        kube.secrets["apps", name.replace("_", "-")] = {".dockerconfigjson": config}
    return kube


def view(annotations: dict[str, str] | None = None, **spec: str) -> WatchedRelease:
    return read_release(release("hr", {}, annotations, **spec))


async def test_annotation_then_service_account_then_operator() -> None:
    kube = kube_with(annotated=dockerconfig("annotated", "1"), from_account=dockerconfig("account", "2"))
    kube.accounts["apps", "deployer"] = ["missing", "from-account"]
    operator = CredentialStore.from_docker_configs(json.loads(dockerconfig("operator", "3")))
    credentials = CycleCredentials(kube, operator)
    annotated = view({"image.helm.fluxcd.io/pull-secret": "annotated"}, serviceAccountName="deployer")
    only_account = view(serviceAccountName="deployer")
    neither = view()
    assert (await credentials.for_release(annotated)).credentials_for(APP) == BasicCredentials(
        "annotated", "1"
    )
    assert (await credentials.for_release(only_account)).credentials_for(APP) == BasicCredentials(
        "account", "2"
    )
    assert (await credentials.for_release(neither)).credentials_for(APP) == BasicCredentials("operator", "3")


async def test_a_more_specific_entry_beats_precedence() -> None:
    """The adapter's rule: a path-prefixed entry of a later source still wins for its repositories."""
    kube = kube_with(annotated=dockerconfig("annotated", "1"))
    operator = CredentialStore.from_docker_configs(json.loads(dockerconfig("team", "2", host=f"{HOST}/team")))
    store = await CycleCredentials(kube, operator).for_release(
        view({"image.helm.fluxcd.io/pull-secret": "annotated"})
    )
    assert store.credentials_for(APP) == BasicCredentials("team", "2")


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        pytest.param(
            None, "Secret apps/regcred named by image.helm.fluxcd.io/pull-secret does not exist", id="missing"
        ),
        pytest.param("{nope", "is not usable: .dockerconfigjson is not JSON", id="not-json"),
    ],
)
async def test_an_unusable_annotated_secret_stops_the_release(secret: str | None, message: str) -> None:
    kube = kube_with(regcred=secret) if secret is not None else FakeKube()
    with pytest.raises(PullSecretError, match=message):
        await CycleCredentials(kube).for_release(view({"image.helm.fluxcd.io/pull-secret": "regcred"}))


async def test_a_forbidden_secret_is_reported_without_its_content() -> None:
    class Forbidding(FakeKube):
        async def secret_data(self, namespace: str, name: str) -> dict[str, str]:
            raise Forbidden(f"Secret {namespace}/{name}: forbidden", 403)

    with pytest.raises(PullSecretError, match="is not usable: Secret apps/regcred: forbidden"):
        await CycleCredentials(Forbidding()).for_release(
            view({"image.helm.fluxcd.io/pull-secret": "regcred"})
        )


async def test_a_missing_service_account_means_no_pull_secrets_of_it() -> None:
    store = await CycleCredentials(FakeKube()).for_release(view(serviceAccountName="ghost"))
    assert store.credentials_for(APP) is None


async def test_each_secret_and_account_is_read_once_per_cycle() -> None:
    kube = kube_with(regcred=dockerconfig("a", "b"))
    kube.accounts["apps", "default"] = ["regcred"]
    credentials = CycleCredentials(kube)
    for _ in range(5):
        await credentials.for_release(view({"image.helm.fluxcd.io/pull-secret": "regcred"}))
    assert kube.calls["secret apps/regcred"] == 1
    assert kube.calls["account apps/default"] == 1
    await CycleCredentials(kube).for_release(view())
    assert kube.calls["secret apps/regcred"] == 2
