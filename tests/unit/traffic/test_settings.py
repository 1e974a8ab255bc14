"""Parsing the `traffic:` section: the documented example, defaults, errors that name the key, the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from broker.traffic.settings import traffic_settings

REPO = Path(__file__).resolve().parents[3]
_CONFIG_SCHEMA = json.loads((REPO / "schemas" / "broker-config.schema.json").read_text())
SCHEMA = {"$ref": "#/$defs/traffic", "$defs": _CONFIG_SCHEMA["$defs"]}  # the section, as the loader checks it

EXAMPLE = yaml.safe_load(
    """
traffic:
  rate_limits:
    - name: per-agent
      per: [principal]
      limits: ["60/minute", "5/second"]
    - name: github-writes
      match: {tool: "github__create_*"}
      per: [tenant, tool]
      limits: ["100/hour"]
  quotas:
    - name: tenant-daily
      per: [tenant]
      budget: 10000
      period: day
      costs: {"github__*": 5, "time__*": 0}
  concurrency: {per_upstream: 32, per_principal: 8, max_waiters: 64, max_wait: 5}
  breakers: {failure_ratio: 0.5, window: 30, min_calls: 10, cool_down: 15, half_open_calls: 2}
  cache: {enabled: true, ttl: 10, max_entries: 10000, shared: false}
  storage: "redis://127.0.0.1:6379/0"
"""
)["traffic"]


def test_the_documented_example() -> None:
    settings = traffic_settings(EXAMPLE)
    assert [r.name for r in settings.rate_limits] == ["per-agent", "github-writes"]
    assert [(int(x.amount), int(x.get_expiry())) for x in settings.rate_limits[0].limits] == [
        (60, 60),
        (5, 1),
    ]
    assert settings.rate_limits[1].per == ("tenant", "tool")
    assert settings.rate_limits[1].match.accepts("p", "t", "github__create_issue")
    assert not settings.rate_limits[1].match.accepts("p", "t", "github__search")
    quota = settings.quotas[0]
    assert (
        quota.budget,
        quota.period,
        quota.cost("github__x"),
        quota.cost("time__now"),
        quota.cost("x"),
    ) == (
        10000,
        "day",
        5,
        0,
        1,
    )
    assert settings.concurrency.per_principal == 8 and settings.concurrency.max_wait == 5.0
    assert settings.breakers is not None and settings.breakers.half_open_calls == 2
    assert settings.cache.enabled and not settings.cache.shared
    assert settings.storage == "redis://127.0.0.1:6379/0"
    jsonschema.validate(EXAMPLE, SCHEMA)


def test_absent_section_turns_everything_off() -> None:
    settings = traffic_settings(None)
    assert settings.rate_limits == () and settings.quotas == () and settings.breakers is None
    assert settings.concurrency.per_upstream is None and not settings.cache.enabled
    assert settings.storage == "memory://"
    assert traffic_settings({}) == settings


RL = "rate_limits"
BAD: list[tuple[dict[str, Any], str]] = [
    ({"rate_limit": []}, r"^traffic: unknown key\(s\) rate_limit"),
    ({"rate_limits": {}}, r"^traffic\.rate_limits: must be a list"),
    ({"rate_limits": [{"limits": ["1/minute"]}]}, r"^traffic\.rate_limits\[0\]\.name"),
    ({"rate_limits": [{"name": "a", "limits": []}]}, r"^traffic\.rate_limits\[0\]\.limits"),
    (
        {"rate_limits": [{"name": "a", "limits": ["1/minute", "lots"]}]},
        r"^traffic\.rate_limits\[0\]\.limits\[1\]",
    ),
    ({"rate_limits": [{"name": "a", "limits": ["0/minute"]}]}, r"^traffic\.rate_limits\[0\]\.limits\[0\]"),
    (
        {"rate_limits": [{"name": "a", "limits": ["1/second; 2/minute"]}]},
        r"^traffic\.rate_limits\[0\]\.limits\[0\]",
    ),
    (
        {"rate_limits": [{"name": "a", "per": ["session"], "limits": ["1/second"]}]},
        r"^traffic\.rate_limits\[0\]\.per",
    ),
    ({"rate_limits": [{"name": "a", "match": {"tool": "*x"}, "limits": ["1/second"]}]}, r"\.match\.tool"),
    (
        {"rate_limits": [{"name": "a", "limits": ["1/second"]}, {"name": "a", "limits": ["1/second"]}]},
        r"^traffic\.rate_limits: the name 'a' is used twice",
    ),
    ({"quotas": [{"name": "q", "budget": 0}]}, r"^traffic\.quotas\[0\]\.budget"),
    ({"quotas": [{"name": "q", "budget": 5, "period": "week"}]}, r"^traffic\.quotas\[0\]\.period"),
    (
        {"quotas": [{"name": "q", "budget": 5, "costs": {"x__*": -1}}]},
        r"^traffic\.quotas\[0\]\.costs\['x__\*'\]",
    ),
    ({"concurrency": {"per_upstream": 0}}, r"^traffic\.concurrency\.per_upstream"),
    ({"concurrency": {"max_wait": "5s"}}, r"^traffic\.concurrency\.max_wait"),
    ({"breakers": {"failure_ratio": 1.5}}, r"^traffic\.breakers\.failure_ratio"),
    ({"breakers": {"min_calls": True}}, r"^traffic\.breakers\.min_calls"),
    ({"cache": {"enabled": "yes"}}, r"^traffic\.cache\.enabled"),
    ({"cache": {"ttl": 0}}, r"^traffic\.cache\.ttl"),
    ({"storage": "memcached://x"}, r"^traffic\.storage"),
]


@pytest.mark.parametrize(("raw", "message"), BAD)
def test_errors_name_the_bad_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        traffic_settings(raw)


@pytest.mark.parametrize(
    ("raw", "message"), [b for b in BAD if "used twice" not in b[1] and "0/minute" not in str(b[0])]
)
def test_schema_rejects_what_the_parser_rejects(raw: dict[str, Any], message: str) -> None:
    # Duplicate names and zero amounts inside a limit string are semantic checks only the parser makes.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, SCHEMA)
