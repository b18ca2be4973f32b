"""Legacy target_url destinations: a port-aware allowlist, and no private addresses behind public names."""

from __future__ import annotations

import pytest

from extproc.legacy import LegacyTargets, Resolver, TargetRefused, parse_entry, parse_target


class FakeResolver(Resolver):
    def __init__(self, answers: dict[str, tuple[str, ...]]) -> None:
        super().__init__()
        self.answers = answers
        self.calls = 0

    async def resolve(self, host: str, port: int) -> tuple[str, ...]:
        self.calls += 1
        return self.answers[host]


def targets(*entries: str, **answers: tuple[str, ...]) -> LegacyTargets:
    return LegacyTargets(list(entries), resolver=FakeResolver({k.replace("_", "."): v for k, v in answers.items()}))


@pytest.mark.parametrize(
    "url",
    [
        "http://x:99999/",  # port out of range: the exploit that used to reach any port
        "http://x:port/",
        "//[x]/",
        "http://[x]/",
        "ftp://files.example/",
        "http:///nohost",
        "http://user:pass@api.example/",
        "http://" + "a" * 5000 + ".example/",
    ],
)
async def test_malformed_targets_are_refused_with_400(url: str) -> None:
    with pytest.raises(TargetRefused) as err:
        await targets("x", "api.example").approve(url)
    assert err.value.status == 400 and err.value.code == "invalid_target_url"


async def test_an_entry_without_a_port_allows_only_the_default_port() -> None:
    t = targets("api.example", api_example=("93.184.216.34",))
    assert (await t.approve("https://api.example/v1/x?a=1")).path == "/v1/x?a=1"
    assert (await t.approve("http://api.example/")).authority == "api.example:80"
    for url in ("https://api.example:8443/", "http://api.example:22/"):
        with pytest.raises(TargetRefused) as err:
            await t.approve(url)
        assert err.value.status == 403


async def test_explicit_and_wildcard_ports() -> None:
    t = targets("api.example:8443", "any.example:*", api_example=("93.184.216.34",), any_example=("93.184.216.35",))
    assert (await t.approve("https://api.example:8443/")).port == 8443
    with pytest.raises(TargetRefused):
        await t.approve("https://api.example/")  # 443 was not listed
    assert (await t.approve("http://any.example:7000/")).port == 7000


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.5", "169.254.169.254", "192.168.1.1", "::1", "fd00::1", "::ffff:127.0.0.1", "100.64.0.1"]
)
async def test_a_public_name_resolving_to_a_private_address_is_refused(address: str) -> None:
    t = targets("partner.example", partner_example=("93.184.216.34", address))
    with pytest.raises(TargetRefused) as err:
        await t.approve("https://partner.example/")
    assert err.value.status == 403 and "non-public" in str(err.value)


async def test_an_ip_literal_or_localhost_entry_allows_exactly_that_address() -> None:
    t = targets("127.0.0.1:8080", "[::1]:9000", "localhost:7000")
    assert (await t.approve("http://127.0.0.1:8080/v1")).host == "127.0.0.1"
    assert (await t.approve("http://[::1]:9000/")).authority == "[::1]:9000"
    assert (await t.approve("http://localhost:7000/")).host == "localhost"
    with pytest.raises(TargetRefused):
        await t.approve("http://127.0.0.2:8080/")  # another loopback address is another address
    assert t.resolver.calls == 0  # type: ignore[attr-defined]  # literals are never resolved


def test_bad_allowlist_entries_fail_at_start() -> None:
    for bad in ("", "host:0", "host:70000", "host:abc", "http://host", "a/b", "[::1"):
        with pytest.raises(ValueError):
            parse_entry(bad)
    assert parse_entry("API.Example.:443").host == "api.example"


def test_parse_target_reads_default_ports() -> None:
    assert parse_target("https://h.example/x")[1:] == ("h.example", 443)
    assert parse_target("http://H.example:81")[1:] == ("h.example", 81)


async def test_an_unresolvable_target_is_a_502() -> None:
    t = LegacyTargets(["nowhere.invalid"], resolver=Resolver(timeout_s=2))
    with pytest.raises(TargetRefused) as err:
        await t.approve("http://nowhere.invalid/")
    assert err.value.status == 502
