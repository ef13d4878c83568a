"""Tenants for multi-tenancy tests: a ServiceAccount, a Role bound to it, and waiting until the authorizer agrees.

The test cluster runs with RBAC on and no controller-manager, so the aggregated `admin` ClusterRole is empty: each
test says exactly which rights its tenant has. The RBAC authorizer follows the API through a watch, so a new binding
takes a moment to count: `wait_until_allowed` waits for that fact (a SubjectAccessReview), not for time.
"""

from __future__ import annotations

from kubernetes import client as k8s

from tests.support.wait import eventually

RBAC_GROUP = "rbac.authorization.k8s.io"


def rule(
    api_group: str, resources: list[str], verbs: list[str], names: list[str] | None = None
) -> k8s.V1PolicyRule:
    return k8s.V1PolicyRule(api_groups=[api_group], resources=resources, verbs=verbs, resource_names=names)


def create_service_account(core: k8s.CoreV1Api, namespace: str, name: str) -> str:
    """Create the ServiceAccount; returns its user name as the API server sees it."""
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
    )
    return f"system:serviceaccount:{namespace}:{name}"


def grant(
    api_client: k8s.ApiClient,
    namespace: str,
    name: str,
    account: tuple[str, str],
    rules: list[k8s.V1PolicyRule],
) -> None:
    """A Role `name` in `namespace` with `rules`, bound to ServiceAccount `account` = (namespace, name)."""
    rbac = k8s.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(namespace, k8s.V1Role(metadata=k8s.V1ObjectMeta(name=name), rules=rules))
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name=name),
            role_ref=k8s.V1RoleRef(api_group=RBAC_GROUP, kind="Role", name=name),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name=account[1], namespace=account[0])],
        ),
    )


def allowed(
    api_client: k8s.ApiClient,
    user: str,
    namespace: str,
    verb: str,
    resource: str,
    *,
    group: str = "",
    name: str = "",
) -> bool:
    """Whether the authorizer lets ServiceAccount user `user` do `verb` on `resource` in `namespace`."""
    account_namespace = user.split(":")[2]
    review = k8s.V1SubjectAccessReview(
        spec=k8s.V1SubjectAccessReviewSpec(
            user=user,
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{account_namespace}",
                "system:authenticated",
            ],
            resource_attributes=k8s.V1ResourceAttributes(
                namespace=namespace, verb=verb, group=group, resource=resource, name=name or None
            ),
        )
    )
    status = k8s.AuthorizationV1Api(api_client).create_subject_access_review(review).status
    return bool(status.allowed)


def wait_until_allowed(
    api_client: k8s.ApiClient,
    user: str,
    namespace: str,
    verb: str,
    resource: str,
    *,
    group: str = "",
    name: str = "",
    timeout: float = 30,
) -> None:
    eventually(
        lambda: allowed(api_client, user, namespace, verb, resource, group=group, name=name),
        timeout,
        f"{user} to be allowed to {verb} {resource} in {namespace}",
    )
