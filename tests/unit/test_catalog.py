from __future__ import annotations

import pytest

from broker.catalog.catalog import Catalog, UpstreamOffer, page


def tool(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "inputSchema": {"type": "object"}, **extra}


def catalog(*offers: UpstreamOffer) -> Catalog:
    cat = Catalog([o.name for o in offers], {o.name: o.namespace for o in offers})
    for offer in offers:
        cat.set_offer(offer)
    return cat


def test_namespaced_entries_keep_the_definition_and_remember_the_upstream_name() -> None:
    cat = catalog(UpstreamOffer("notes", True, tools=[tool("read", annotations={"readOnlyHint": True})]))
    entry = cat.tool("notes__read")
    assert entry is not None
    assert (entry.upstream, entry.upstream_name) == ("notes", "read")
    assert cat.tool_list == [tool("notes__read", annotations={"readOnlyHint": True})]
    assert cat.tool("read") is None


def test_a_clash_keeps_the_first_configured_upstream_and_names_both() -> None:
    cat = catalog(UpstreamOffer("a", False, tools=[tool("t")]), UpstreamOffer("b", False, tools=[tool("t")]))
    entry = cat.tool("t")
    assert entry is not None
    assert entry.upstream == "a"
    assert len(cat.problems) == 1
    assert "'a'" in cat.problems[0]
    assert "'b'" in cat.problems[0]


def test_order_of_arrival_does_not_change_who_wins() -> None:
    cat = Catalog(["a", "b"], {"a": False, "b": False})
    cat.set_offer(UpstreamOffer("b", False, tools=[tool("t")]))
    cat.set_offer(UpstreamOffer("a", False, tools=[tool("t")]))
    entry = cat.tool("t")
    assert entry is not None
    assert entry.upstream == "a"


def test_resources_route_by_listing_prefix_and_template() -> None:
    cat = catalog(
        UpstreamOffer("notes", True, resources=[{"uri": "notes://index", "name": "index"}]),
        UpstreamOffer(
            "files",
            False,
            resources=[{"uri": "file:///a.txt", "name": "a"}],
            resource_templates=[{"uriTemplate": "file:///logs/{day}", "name": "log"}],
        ),
    )
    assert [r["uri"] for r in cat.resource_list] == ["notes+notes://index", "file:///a.txt"]
    listed = cat.resource("notes+notes://index")
    assert listed is not None
    assert (listed.upstream, listed.upstream_uri) == ("notes", "notes://index")
    unlisted = cat.resource("notes+notes://note/7")  # not listed, but the prefix names the upstream
    assert unlisted is not None
    assert (unlisted.upstream, unlisted.upstream_uri) == ("notes", "notes://note/7")
    templated = cat.resource("file:///logs/monday")
    assert templated is not None
    assert templated.upstream == "files"
    owner = cat.template_owner("file:///logs/{day}")
    assert owner is not None
    assert owner.upstream == "files"


def test_removing_an_upstream_withdraws_its_entries_and_bumps_the_version() -> None:
    cat = catalog(UpstreamOffer("notes", True, tools=[tool("read")]))
    version = cat.version
    cat.remove("notes")
    assert cat.tool("notes__read") is None
    assert cat.version > version


def test_pages_and_cursors() -> None:
    items = [{"name": str(i)} for i in range(5)]
    first, cursor = page(items, None, 2, 3)
    assert first == items[:2]
    assert cursor == "3:2"
    second, cursor = page(items, cursor, 2, 3)
    assert second == items[2:4]
    last, cursor = page(items, cursor, 2, 3)
    assert last == items[4:]
    assert cursor is None
    assert page(items, None, 0, 1) == (items, None)
    with pytest.raises(ValueError, match="not issued by this broker"):
        page(items, "garbage", 2, 1)
