"""How the registry client reports a failure: every failed operation is a metric sample by registry,
operation and kind of error (also the ones whose requests all said 200: a malformed answer), and an answer
that is not JSON where JSON belongs says what it was served as (a login page is not a broken registry)."""

from __future__ import annotations

import pytest
from tests.unit.adapters.test_registry_client import REPO, FakeRegistry, Fault, fake, make_client

from helmrelease.adapters.registry import (
    RegistryError,
    RegistryMalformedResponse,
    RegistryNotFound,
    RegistryRateLimited,
    RegistryUnauthorized,
    RegistryUnavailable,
)

__all__ = ["fake"]

LOGIN = b"<html><body><form action=/login>Please sign in</form></body></html>"


def errors(client: object, **labels: str) -> float:
    metrics = client.metrics  # type: ignore[attr-defined]
    return sum(
        sample.value
        for family in metrics.errors.collect()
        for sample in family.samples
        if sample.name.endswith("_total") and labels.items() <= sample.labels.items()
    )


@pytest.mark.parametrize(
    ("faults", "error", "label"),
    [
        pytest.param([Fault(429)] * 4, RegistryRateLimited, "rate_limited", id="429"),
        pytest.param([Fault(503)] * 4, RegistryUnavailable, "unavailable", id="503"),
        pytest.param(
            [Fault(200, body=b"{'tags': []}")], RegistryMalformedResponse, "malformed", id="bad-json"
        ),
        pytest.param([Fault(404)], RegistryNotFound, "not_found", id="404"),
        pytest.param([Fault(401)], RegistryUnauthorized, "unauthorized", id="401"),
        pytest.param([Fault(400)], RegistryError, "other", id="400"),
    ],
)
async def test_every_failed_operation_is_counted_by_its_kind(
    fake: FakeRegistry, faults: list[Fault], error: type[RegistryError], label: str
) -> None:
    fake.tags[REPO] = ["1.0"]
    fake.faults["tags"].extend(faults)
    async with make_client(fake) as client:
        with pytest.raises(error):
            await client.list_tags(f"{fake.host}/{REPO}")
        assert errors(client) == 1  # once per operation, not per attempt
        assert errors(client, registry=fake.host, operation="list_tags", error=label) == 1
        assert await client.list_tags(f"{fake.host}/{REPO}") == ("1.0",)
        assert errors(client) == 1  # a success counts nothing


async def test_a_manifest_failure_is_counted_under_its_operation(fake: FakeRegistry) -> None:
    fake.add_image(REPO, "1.0", {"created": "2026-01-01T00:00:00Z"})
    fake.faults["manifest"].extend([Fault(500)] * 4)
    async with make_client(fake) as client:
        with pytest.raises(RegistryUnavailable):
            await client.resolve_tag(f"{fake.host}/{REPO}", "1.0")
        assert errors(client, operation="resolve_tag", error="unavailable") == 1


@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        pytest.param("text/html; charset=utf-8", "served as 'text/html; charset=utf-8', not JSON", id="html"),
        pytest.param("application/octet-stream", "as 'application/octet-stream', not JSON", id="octet"),
        pytest.param("application/json", None, id="json-that-is-not"),
    ],
)
async def test_a_page_that_is_not_json_says_what_it_was_served_as(
    fake: FakeRegistry, content_type: str, named: str | None
) -> None:
    fake.faults["tags"].append(Fault(200, {"Content-Type": content_type}, LOGIN))
    async with make_client(fake) as client:
        with pytest.raises(RegistryMalformedResponse) as raised:
            await client.list_tags(f"{fake.host}/{REPO}")
    message = str(raised.value)
    assert "tag list is not JSON" in message
    if named is None:
        assert "served as" not in message
    else:
        assert named in message
        assert "not a proxy or login page" in message  # the hint


async def test_a_token_service_answering_html_says_so(fake: FakeRegistry) -> None:
    fake.auth = "bearer"
    fake.tags[REPO] = ["1.0"]
    fake.faults["token"].append(Fault(200, {"Content-Type": "text/html"}, LOGIN))
    async with make_client(fake) as client:
        with pytest.raises(RegistryMalformedResponse, match=r"token response is not JSON .*'text/html'"):
            await client.list_tags(f"{fake.host}/{REPO}")


async def test_a_redirect_loop_is_named_as_one(fake: FakeRegistry) -> None:
    fake.tags[REPO] = ["1.0"]
    location = f"/v2/{REPO}/tags/list"
    fake.faults["tags"].extend([Fault(307, {"Location": location})] * 20)
    async with make_client(fake) as client:
        with pytest.raises(RegistryMalformedResponse) as raised:
            await client.list_tags(f"{fake.host}/{REPO}")
        assert "tag list: redirected 10 times without an answer: a redirect loop; " in str(raised.value)
        assert fake.count("tags") == 10  # ten answers, each a redirect; the loop is not retried
        assert errors(client, error="malformed") == 1
