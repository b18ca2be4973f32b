"""Tool-name aliasing: provider-safe, deterministic, collision-free, reversible."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.toolnames import PROVIDER_NAME_RE, ToolNameCodec

# Names agents really send: MCP servers, plugins, namespaced tools, non-Latin labels.
awkward_names = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="abcXYZ019_-.:/ é日", min_size=0, max_size=100),
    st.from_regex(r"[a-zA-Z0-9_-]{1,70}", fullmatch=True),
)
namespaces = st.one_of(st.none(), st.text(max_size=40))


@pytest.mark.parametrize("name", ["get_weather", "search-2", "A", "x" * 64, "mcp__github__search"])
def test_safe_names_stay_themselves(name: str) -> None:
    codec = ToolNameCodec([name])
    assert codec.encode(name) == name
    assert codec.decode(name) == name
    assert codec.mapping == {}
    assert not codec.active


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("github.search_issues", "github_search_issues_"),
        ("fs/read file", "fs_read_file_"),
        ("filesystem:read_file", "filesystem_read_file_"),
        ("café", "cafe_"),  # accents fold to readable ASCII
        ("日本語", "tool_"),  # nothing readable survives: generic stem
        ("", "tool_"),
        ("x" * 65, "x" * 20),
    ],
)
def test_unsafe_names_get_readable_hashed_alias(name: str, stem: str) -> None:
    codec = ToolNameCodec()
    alias = codec.encode(name)
    assert PROVIDER_NAME_RE.match(alias)
    assert alias.startswith(stem)
    assert alias != name
    assert codec.decode(alias) == name
    assert codec.mapping == {alias: name}
    assert codec.active


def test_alias_is_deterministic_across_codecs() -> None:
    assert ToolNameCodec().encode("github.search_issues") == "github_search_issues_25c7629b"
    assert ToolNameCodec().encode("fs/read file") == ToolNameCodec().encode("fs/read file")


def test_encode_is_idempotent_and_add_returns_alias() -> None:
    codec = ToolNameCodec()
    alias = codec.add("a.b")
    assert codec.add("a.b") == alias == codec.encode("a.b")
    assert len(codec.mapping) == 1


def test_unknown_strings_decode_unchanged() -> None:
    codec = ToolNameCodec(["a.b"])
    assert codec.decode("never_registered") == "never_registered"
    assert codec.decode("a.b") == "a.b"  # an original is not an alias


def test_alias_never_takes_an_unchanged_name_registered_earlier() -> None:
    taken = ToolNameCodec().encode("a.b")  # what "a.b" would become on its own
    codec = ToolNameCodec([taken, "a.b"])
    assert codec.encode(taken) == taken
    alias = codec.encode("a.b")
    assert alias != taken and PROVIDER_NAME_RE.match(alias)
    assert codec.decode(alias) == "a.b" and codec.decode(taken) == taken


def test_safe_name_registered_after_an_equal_alias_is_itself_aliased() -> None:
    taken = ToolNameCodec().encode("a.b")
    codec = ToolNameCodec(["a.b", taken])
    assert codec.encode("a.b") == taken
    other = codec.encode(taken)
    assert other != taken
    assert codec.decode(other) == taken and codec.decode(taken) == "a.b"


def test_hash_is_lengthened_deterministically_on_conflict() -> None:
    first = ToolNameCodec().encode("x.y")
    stem, digest = first.rsplit("_", 1)
    # Occupy every candidate of the first digest: the codec must re-seed and still succeed.
    occupied = [f"{stem}_{digest}"]
    base = ToolNameCodec()
    for name in occupied:
        base.add(name)
    again = ToolNameCodec(occupied)
    assert base.encode("x.y") == again.encode("x.y")
    assert len(base.encode("x.y").rsplit("_", 1)[1]) > len(digest)


def test_exhausting_every_digest_length_falls_back_to_reseeded_digest() -> None:
    probe = ToolNameCodec()
    squatters = []
    # Predict every candidate "q.r" could take from its first digest, and register them first.
    for candidate in probe._candidates("q.r"):
        if len(squatters) == 15:
            break
        squatters.append(candidate)
    codec = ToolNameCodec(squatters)
    alias = codec.encode("q.r")
    assert alias not in squatters and PROVIDER_NAME_RE.match(alias)
    assert codec.decode(alias) == "q.r"


def test_namespace_aliases_every_name() -> None:
    codec = ToolNameCodec(["search", "a.b"], namespace="team-a")
    assert codec.encode("search") == "team-a__search"
    assert codec.encode("a.b").startswith("team-a__a_b_")
    assert codec.active
    assert codec.decode("team-a__search") == "search"
    assert codec.namespace_prefix == "team-a__"


def test_namespaces_keep_tenants_apart() -> None:
    a = ToolNameCodec(["search"], namespace="team-a")
    b = ToolNameCodec(["search"], namespace="team-b")
    assert a.encode("search") != b.encode("search")
    assert b.decode(a.encode("search")) == a.encode("search")  # b does not know a's alias


def test_namespace_is_sanitised_and_lossy_labels_stay_distinct() -> None:
    dotted = ToolNameCodec(namespace="team.a").namespace_prefix
    spaced = ToolNameCodec(namespace="team a").namespace_prefix
    assert dotted != spaced
    for prefix in (dotted, spaced, ToolNameCodec(namespace="").namespace_prefix):
        assert PROVIDER_NAME_RE.match(prefix)
    long_ns = ToolNameCodec(["t"], namespace="n" * 100)
    assert PROVIDER_NAME_RE.match(long_ns.encode("t"))


def test_long_safe_name_under_namespace_is_hashed_to_fit() -> None:
    codec = ToolNameCodec(namespace="team-a")
    alias = codec.encode("z" * 64)
    assert len(alias) <= 64 and PROVIDER_NAME_RE.match(alias)
    assert codec.decode(alias) == "z" * 64


def test_is_complete_alias_knows_prefixes() -> None:
    codec = ToolNameCodec(["search", "search_v2", "a.b"])
    assert not codec.is_complete_alias("search")  # could still grow into search_v2
    assert codec.is_complete_alias("search_v2")
    assert codec.is_complete_alias(codec.encode("a.b"))
    assert not codec.is_complete_alias("a_b")
    assert codec.aliases == frozenset({"search", "search_v2", codec.encode("a.b")})


def _check_codec(names: list[str], namespace: str | None) -> None:
    codec = ToolNameCodec(names, namespace=namespace)
    aliases = {name: codec.encode(name) for name in names}
    for name, alias in aliases.items():
        assert PROVIDER_NAME_RE.match(alias), (name, alias)
        assert codec.decode(alias) == name
    assert len(set(aliases.values())) == len(aliases)  # distinct names, distinct aliases
    if namespace is None:
        for name, alias in aliases.items():
            if alias == name:
                assert PROVIDER_NAME_RE.match(name)
    else:
        assert all(alias != name for name, alias in aliases.items())
    assert codec.mapping == {alias: name for name, alias in aliases.items() if alias != name}
    assert codec.active == bool(codec.mapping)
    # Same registration order, same aliases: the upstream sees stable names across turns.
    assert {n: ToolNameCodec(names, namespace=namespace).encode(n) for n in names} == aliases


@settings(max_examples=150, deadline=None)
@given(st.lists(awkward_names, max_size=12))
def test_property_without_namespace(names: list[str]) -> None:
    _check_codec(names, None)


@settings(max_examples=150, deadline=None)
@given(st.lists(awkward_names, max_size=12), namespaces.filter(lambda ns: ns is not None))
def test_property_with_namespace(names: list[str], namespace: str) -> None:
    _check_codec(names, namespace)


@settings(max_examples=100, deadline=None)
@given(st.lists(awkward_names, max_size=8), namespaces)
def test_property_aliases_of_aliases_never_collide(names: list[str], namespace: str | None) -> None:
    # Registering the aliases themselves as names (a client echoing them back) must
    # still give a bijection.
    first = ToolNameCodec(names, namespace=namespace)
    echoed = names + [first.encode(n) for n in names]
    _check_codec(echoed, namespace)
