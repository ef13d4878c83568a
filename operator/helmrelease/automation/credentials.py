"""Registry credentials for one HelmRelease: its pull-secret annotation, its ServiceAccount, the operator's.

The order is kubelet's idea of precedence, most specific first: the Secret named by the
``image.helm.fluxcd.io/pull-secret`` annotation, then the ``imagePullSecrets`` of the release's
ServiceAccount (``spec.serviceAccountName``, else ``default``), then the operator-level docker config.
Within that, the registry adapter's ``CredentialStore`` picks the most specific matching entry.

A Secret the annotation names must be usable: when it is missing or unreadable, the release is not scanned
(guessing anonymous access would report a misleading 401). A ServiceAccount's missing pull secrets are
skipped, as kubelet skips them. Each Secret and ServiceAccount is read once per cycle, however many
releases share it. Secret contents never reach a log or a message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Final, Protocol

from helmrelease.adapters.coalesce import TaskMemo
from helmrelease.adapters.kube import KubeError, NotFound
from helmrelease.adapters.registry import CredentialStore, DockerConfigError
from helmrelease.automation.watched import PULL_SECRET_ANNOTATION, WatchedRelease

_log = logging.getLogger(__name__)

DOCKER_CONFIG_KEYS: Final = (".dockerconfigjson", ".dockercfg")


class SecretReader(Protocol):
    """The two kube reads credentials need (``KubeClient`` has them)."""

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]: ...

    async def service_account_pull_secrets(self, namespace: str, name: str) -> list[str]: ...


class PullSecretError(Exception):
    """The Secret a release's pull-secret annotation names cannot be used; the message says why."""


def store_from_secret_data(data: Mapping[str, str]) -> CredentialStore:
    """The credentials in a Secret's (decoded) data: ``.dockerconfigjson``, or the legacy ``.dockercfg``."""
    for key in DOCKER_CONFIG_KEYS:
        if key in data:
            try:
                config = json.loads(data[key])
            except ValueError:
                raise DockerConfigError(f"{key} is not JSON") from None
            if not isinstance(config, Mapping):
                raise DockerConfigError(f"{key} is not a JSON object")
            return CredentialStore.from_docker_configs(config)
    raise DockerConfigError(f"the Secret has none of the keys {', '.join(DOCKER_CONFIG_KEYS)}")


def merged(*stores: CredentialStore) -> CredentialStore:
    """One store over several, earlier stores first among equally specific entries."""
    return CredentialStore(tuple(entry for store in stores for entry in store.entries))


class CycleCredentials:
    """Resolves each release's credentials during one scan cycle; make a new one per cycle."""

    def __init__(self, kube: SecretReader, operator_store: CredentialStore | None = None) -> None:
        self._kube = kube
        self._operator_store = operator_store or CredentialStore()
        self._secrets: TaskMemo[tuple[str, str], CredentialStore] = TaskMemo(forget_failures=False)
        self._accounts: TaskMemo[tuple[str, str], tuple[str, ...]] = TaskMemo(forget_failures=False)

    async def for_release(self, view: WatchedRelease) -> CredentialStore:
        """Credentials for ``view``'s images; raises ``PullSecretError`` when its annotated Secret is unusable."""
        namespace = view.release.namespace
        stores: list[CredentialStore] = []
        if view.pull_secret is not None:
            try:
                stores.append(await self._secret(namespace, view.pull_secret))
            except NotFound:
                raise PullSecretError(
                    f"Secret {namespace}/{view.pull_secret} named by {PULL_SECRET_ANNOTATION} does not exist"
                ) from None
            except (KubeError, DockerConfigError) as error:
                raise PullSecretError(
                    f"Secret {namespace}/{view.pull_secret} named by {PULL_SECRET_ANNOTATION} "
                    f"is not usable: {error}"
                ) from None
        for name in await self._account_secrets(namespace, view.service_account):
            try:
                stores.append(await self._secret(namespace, name))
            except (KubeError, DockerConfigError) as error:
                _log.debug(
                    "%s: skipping pull secret %s of ServiceAccount %s: %s",
                    view.release,
                    name,
                    view.service_account,
                    error,
                )
        stores.append(self._operator_store)
        return merged(*stores)

    async def _secret(self, namespace: str, name: str) -> CredentialStore:
        async def read() -> CredentialStore:
            return store_from_secret_data(await self._kube.secret_data(namespace, name))

        return await self._secrets.run((namespace, name), read)

    async def _account_secrets(self, namespace: str, account: str) -> tuple[str, ...]:
        async def read() -> tuple[str, ...]:
            try:
                return tuple(await self._kube.service_account_pull_secrets(namespace, account))
            except KubeError as error:
                # kubelet would refuse the pod; for scanning, the annotation and operator config still apply.
                level = logging.DEBUG if isinstance(error, NotFound) else logging.WARNING
                _log.log(
                    level, "ServiceAccount %s/%s: %s; using no pull secrets of it", namespace, account, error
                )
                return ()

        return await self._accounts.run((namespace, account), read)
