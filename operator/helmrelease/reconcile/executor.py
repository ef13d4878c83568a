"""Runs the one Helm action the plan chose and says how it ended, as a `conditions.Outcome`.

One function per action family, as helm-controller keeps install, upgrade, test, rollback, unlock and uninstall
apart; `ActionExecutor.run` only chooses among them, and turns a `HelmError` into a failed outcome once, here. Helm
runs as the HelmRelease's ServiceAccount (when it names one) with the Secret-sourced values masked in its errors;
what the executor does beside Helm (deleting test Pods, marking the release's resources) it does as that account too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from helmrelease.adapters import helm as helm_adapter
from helmrelease.adapters.charts import FetchedChart
from helmrelease.adapters.kube import KubeError, ObjectRef
from helmrelease.api.constants import Action, HelmStatus
from helmrelease.api.ownership import ANTECEDENT_ANNOTATION
from helmrelease.api.resource import HelmRelease
from helmrelease.reconcile.apis import HelmApi, KubeApi, acting_for, helm_for
from helmrelease.reconcile.conditions import Outcome, timeout_note
from helmrelease.reconcile.drift import manifest_identities
from helmrelease.reconcile.masking import Masker
from helmrelease.reconcile.plan import Desired, ObservedRelease
from helmrelease.reconcile.releases import deploy_description, helm_status, owner_labels

log = logging.getLogger(__name__)


class ActionExecutor:
    """Carries out Helm actions for HelmReleases with `helm`, and the Kubernetes calls around them with `kube`."""

    def __init__(self, helm: HelmApi, kube: KubeApi) -> None:
        self.helm = helm
        self.kube = kube

    async def run(
        self,
        action: Action,
        hr: HelmRelease,
        desired: Desired,
        *,
        chart: FetchedChart,
        values: Mapping[str, Any],
        observed: ObservedRelease | None,
        previous: tuple[str, str] | None,
        masker: Masker,
        force_request: str | None = None,
    ) -> Outcome:
        """Run `action`; a Helm failure is a failed outcome (with where the release stands), never an exception.

        `previous` is the (namespace, name) of the release `uninstall-previous` removes; `force_request` the
        force token a deploy carries out, labelled on the revision it makes.
        """
        helm = helm_for(self.helm, hr, masker)
        try:
            match action:
                case Action.INSTALL | Action.UPGRADE | Action.ADOPT:
                    return await self._deploy(helm, hr, desired, action, chart, values, force_request)
                case Action.TEST:
                    return await self._test(helm, hr)
                case Action.ROLLBACK:
                    return await self._rollback(helm, hr)
                case Action.UNLOCK:
                    return await self._unlock(helm, hr, observed)
                case Action.UNINSTALL:
                    await helm.uninstall(
                        hr.release_name, hr.target_namespace, timeout_seconds=hr.spec.timeout
                    )
                    return Outcome(True)
                case Action.UNINSTALL_PREVIOUS if previous is not None:
                    namespace, name = previous
                    await helm.uninstall(name, namespace, timeout_seconds=hr.spec.timeout)
                    return Outcome(True)
        except helm_adapter.HelmError as error:
            revision, status = await self._status_after(helm, hr)
            cause = error.cause
            if isinstance(error, helm_adapter.Timeout):
                cause = f"{cause}; {timeout_note(action, hr.spec)}"
            return Outcome(
                False,
                error=cause,
                helm_revision=revision,
                release_status=status,
                cluster_side=error.cluster_side,
            )
        raise ValueError(f"{action} is not a Helm action here")

    async def uninstall(self, hr: HelmRelease, namespace: str, name: str, masker: Masker) -> None:
        """Uninstall release `namespace/name` of a HelmRelease being deleted; raises `HelmError`."""
        helm = helm_for(self.helm, hr, masker)
        await helm.uninstall(name, namespace, timeout_seconds=hr.spec.timeout)

    async def mark_resources(self, hr: HelmRelease, manifest: str | None = None) -> None:
        """Annotate the release's resources with the antecedent, as Flux v1 did (its users' tooling reads it).

        The list comes from `manifest`, what the deploy just applied as helm printed it, or else from Helm's stored
        release, which whoever may write Secrets in the release's namespace may edit: the writes are made as the
        HelmRelease's ServiceAccount, and one it may not make is only a warning.
        """
        kube = acting_for(self.kube, hr)
        refused: list[str] = []
        try:
            if manifest is None:
                latest = await helm_for(self.helm, hr).status(hr.release_name, hr.target_namespace)
                stored = await self.kube.stored_release(hr.target_namespace, hr.release_name, latest.revision)
                if stored is None:
                    return
                manifest = stored.manifest
            objects = {
                ObjectRef(
                    obj.api_version, obj.kind, obj.namespace or hr.target_namespace, obj.name
                ): obj.label
                for obj in manifest_identities(manifest, hr.target_namespace)
            }
            refused = [
                objects[ref] for ref in await kube.annotate(objects, {ANTECEDENT_ANNOTATION: hr.antecedent})
            ]
        except (KubeError, helm_adapter.HelmError) as error:
            log.warning(
                "could not annotate resources of %s/%s: %s", hr.target_namespace, hr.release_name, error
            )
        if refused:
            log.warning(
                "did not annotate %s of release %s/%s: forbidden for %s",
                ", ".join(refused),
                hr.target_namespace,
                hr.release_name,
                kube.identity or "the operator",
            )

    # --- one function per action family ---------------------------------------------------------------------

    async def _deploy(
        self,
        helm: HelmApi,
        hr: HelmRelease,
        desired: Desired,
        action: Action,
        chart: FetchedChart,
        values: Mapping[str, Any],
        force_request: str | None = None,
    ) -> Outcome:
        """Install, upgrade, or adopt (an upgrade of a release found without an owner)."""
        spec = hr.spec
        options = helm_adapter.DeployOptions(
            timeout=spec.timeout,
            wait=spec.wait_enabled,
            force=spec.force_upgrade and action is not Action.INSTALL,
            skip_crds=spec.skip_crds,
            disable_openapi_validation=spec.disable_openapi_validation,
            reset_values=not spec.reuse_values,
            max_history=spec.max_history,
            description=deploy_description(action.value, hr.metadata.namespace, hr.metadata.name),
            force_conflicts=True,
            # The digest too: a restart after helm returned knows what this revision holds.
            labels=owner_labels(hr.metadata.namespace, hr.metadata.name, desired.digest, force_request),
        )
        deploy = (
            helm_adapter.DeployAction.INSTALL
            if action is Action.INSTALL
            else helm_adapter.DeployAction.UPGRADE
        )
        release = await helm.upgrade_install(
            hr.release_name, hr.target_namespace, chart.path, values, options, action=deploy
        )
        return Outcome(
            True,
            helm_revision=release.revision,
            release_status=helm_status(release.status),
            manifest=release.manifest or None,
        )

    async def _test(self, helm: HelmApi, hr: HelmRelease) -> Outcome:
        """Run the release's tests; a failing test is a failed outcome, and its Pods go if `test.cleanup` says so."""
        run = await helm.test(hr.release_name, hr.target_namespace, timeout_seconds=hr.spec.test.timeout)
        if hr.spec.test.cleanup:
            await self._delete_test_pods(hr, run.hooks)
        revision, status = await self._status_after(helm, hr)
        return Outcome(run.passed, error=run.detail, helm_revision=revision, release_status=status)

    async def _rollback(self, helm: HelmApi, hr: HelmRelease) -> Outcome:
        """Roll back to the previous revision; where that left the release comes from `helm history`: its newest
        revision is the rollback, and its description names the revision rolled back to ("Rollback to 1"), which a
        message must not guess."""
        spec = hr.spec
        await helm.rollback(
            hr.release_name,
            hr.target_namespace,
            helm_adapter.RollbackOptions(
                timeout=spec.rollback.timeout,
                force=spec.rollback.force,
                recreate=spec.rollback.recreate,
                disable_hooks=spec.rollback.disable_hooks,
                wait=spec.rollback.wait,
                max_history=spec.max_history,
            ),
        )
        try:
            history = await helm.history(hr.release_name, hr.target_namespace)
        except helm_adapter.HelmError as error:
            log.warning("helm history %s/%s failed: %s", hr.target_namespace, hr.release_name, error)
            revision, status = await self._status_after(helm, hr)
            return Outcome(True, helm_revision=revision, release_status=status)
        latest = max(history, key=lambda entry: entry.revision, default=None)
        if latest is None:
            return Outcome(True)
        return Outcome(
            True,
            helm_revision=latest.revision,
            release_status=helm_status(latest.status),
            rolled_back_to=latest.rollback_target,
        )

    async def _unlock(self, helm: HelmApi, hr: HelmRelease, observed: ObservedRelease | None) -> Outcome:
        """Recover a release left pending-* by a process that died (pyhelm3's recovery, in our loop).

        pending-install has nothing to go back to: uninstall it (the next step installs afresh). pending-upgrade and
        pending-rollback go back to the previous revision, which Helm keeps.
        """
        name, namespace = hr.release_name, hr.target_namespace
        status = observed.status if observed else HelmStatus.UNKNOWN
        if status in (HelmStatus.PENDING_INSTALL, HelmStatus.UNINSTALLING) or (
            observed and observed.revision <= 1
        ):
            await helm.uninstall(name, namespace, timeout_seconds=hr.spec.timeout)
            return Outcome(True, release_status=HelmStatus.UNINSTALLED)
        await helm.rollback(
            name,
            namespace,
            helm_adapter.RollbackOptions(timeout=hr.spec.timeout, max_history=hr.spec.max_history),
        )
        revision, release_status = await self._status_after(helm, hr)
        return Outcome(True, helm_revision=revision, release_status=release_status)

    # --- around the actions -----------------------------------------------------------------------------------

    async def _status_after(self, helm: HelmApi, hr: HelmRelease) -> tuple[int | None, HelmStatus | None]:
        """Where the release stands after an action, from helm itself (failures are rare; accuracy matters)."""
        try:
            release = await helm.status(hr.release_name, hr.target_namespace)
        except helm_adapter.ReleaseNotFound:
            return None, None
        except helm_adapter.HelmError as error:
            log.warning("helm status %s/%s failed: %s", hr.target_namespace, hr.release_name, error)
            return None, None
        return release.revision, helm_status(release.status)

    async def _delete_test_pods(self, hr: HelmRelease, hooks: Iterable[helm_adapter.TestHook]) -> None:
        """Delete the test Pods helm names; as the HelmRelease's ServiceAccount, since Helm's storage names them."""
        kube = acting_for(self.kube, hr)
        for hook in hooks:
            if hook.kind != "Pod":
                continue
            try:
                await kube.delete_pod(hr.target_namespace, hook.name)
            except KubeError as error:
                log.warning(
                    "could not delete test Pod of %s/%s: %s", hr.target_namespace, hr.release_name, error
                )
