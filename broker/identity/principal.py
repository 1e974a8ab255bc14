"""The principal: the identity a decision is about, as the policy engines see it.

Until token authentication (issue #5) it comes from the config's default principal;
afterwards from verified credentials. Either way it is an immutable value, made once
per session or token, never per call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from broker.config import PrincipalConfig


@dataclass(frozen=True, slots=True)
class Principal:
    type: Literal["Agent", "User"]
    id: str
    tenant: str | None = None
    roles: tuple[str, ...] = ()
    claims: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    acting_for: str | None = None
    document: dict[str, Any] = field(init=False, compare=False, repr=False)
    """The `principal` member of an authorization request, built once."""
    cache_key: tuple[Any, ...] = field(init=False, compare=False, repr=False)
    """What list visibility may depend on: equal keys may share cached list decisions."""

    def __post_init__(self) -> None:
        document = {
            "type": self.type,
            "id": self.id,
            "tenant": self.tenant,
            "roles": list(self.roles),
            "claims": dict(self.claims),
            "acting_for": self.acting_for,
        }
        object.__setattr__(self, "document", document)
        key = (
            self.type,
            self.id,
            self.tenant,
            self.roles,
            tuple(sorted(self.claims.items())),
            self.acting_for,
        )
        object.__setattr__(self, "cache_key", key)

    @classmethod
    def from_config(cls, config: PrincipalConfig) -> Principal:
        return cls(
            config.type, config.id, config.tenant, config.roles, dict(config.claims), config.acting_for
        )


def same_principal(a: Principal | None, b: Principal | None) -> bool:
    """Whether two credentials name the same caller (claims may change between tokens)."""
    if a is None or b is None:
        return a is b
    return (a.type, a.id, a.acting_for, a.tenant) == (b.type, b.id, b.acting_for, b.tenant)


def describe(principal: Principal | None) -> str:
    if principal is None:
        return "nobody"
    who = f"{principal.type} {principal.id}"
    return f"{who} acting for {principal.acting_for}" if principal.acting_for else who
