"""Demo upstream for the organisation policy: a small payments ledger.

Three tools, annotated so policies can key on them:

- ``list_transactions`` is read-only;
- ``refund(order_id, amount, currency, reason)`` refunds (part of) a paid order;
- ``charge(customer_id, amount, currency)`` charges a customer.

Refunds and charges are writes that only *add* ledger entries (``destructiveHint: false``),
are not idempotent (two refunds are two refunds) and reach the outside world
(``openWorldHint: true``: a real deployment talks to a payment processor). The
organisation policy (policies/) puts the money limits on top: amounts over 500 need a
human approval, charges only in business hours, agents never charge.

Amounts are in major units (``12.5`` is 12.50) with at most two decimals; currencies are
ISO 4217 codes the ledger supports (``EUR``, ``USD``, ``GBP``). A refund never exceeds
what is left to refund on the order, in the order's currency.

    python examples/payments_server.py                                  # stdio
    python examples/payments_server.py --transport http --port 8803     # http://127.0.0.1:8803/mcp

The ledger lives in memory and is seeded with four orders; every start begins afresh.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from _serve import make_parser, serve
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations as Hints

Currency = Literal["EUR", "USD", "GBP"]
RefundReason = Literal["duplicate", "fraudulent", "requested_by_customer"]

READ = Hints(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
MONEY = Hints(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)

ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("1000000")


@dataclass
class Order:
    order_id: str
    customer_id: str
    amount: Decimal
    currency: str
    refunded: Decimal = Decimal("0")


@dataclass
class Transaction:
    transaction_id: str
    kind: str  # "charge" or "refund"
    order_id: str
    customer_id: str
    amount: str
    currency: str
    reason: str | None = None


SEED_ORDERS = [
    Order("ord_1001", "cus_ada", Decimal("250.00"), "EUR"),
    Order("ord_1002", "cus_ada", Decimal("1200.00"), "EUR"),
    Order("ord_1003", "cus_grace", Decimal("80.00"), "USD"),
    Order("ord_1004", "cus_alan", Decimal("45.50"), "GBP"),
]


class Ledger:
    """Orders and the transactions that charged or refunded them."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.transactions: list[Transaction] = []
        self._ids = itertools.count(1)
        for order in SEED_ORDERS:
            self._charge(order.customer_id, order.amount, order.currency, order.order_id)

    def _next(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    def _charge(self, customer_id: str, amount: Decimal, currency: str, order_id: str | None = None) -> Order:
        order = Order(order_id or self._next("ord"), customer_id, amount, currency)
        self.orders[order.order_id] = order
        self.transactions.append(
            Transaction(self._next("txn"), "charge", order.order_id, customer_id, str(amount), currency)
        )
        return order

    def charge(self, customer_id: str, amount: Any, currency: str) -> dict[str, Any]:
        _check_id("customer_id", customer_id)
        value = _money(amount)
        order = self._charge(customer_id, value, _currency(currency))
        return {**_order_view(order), "transaction_id": self.transactions[-1].transaction_id}

    def refund(self, order_id: str, amount: Any, currency: str, reason: str) -> dict[str, Any]:
        order = self.orders.get(order_id)
        if order is None:
            raise ToolError(f"Unknown order: {order_id!r}")
        value = _money(amount)
        if _currency(currency) != order.currency:
            raise ToolError(f"Order {order_id} was paid in {order.currency}, not {currency}")
        remaining = order.amount - order.refunded
        if value > remaining:
            raise ToolError(f"Only {remaining} {order.currency} is left to refund on {order_id}")
        order.refunded += value
        transaction = Transaction(
            self._next("txn"), "refund", order_id, order.customer_id, str(value), order.currency, reason
        )
        self.transactions.append(transaction)
        return {**_order_view(order), "transaction_id": transaction.transaction_id}

    def listing(self, order_id: str | None, customer_id: str | None, limit: int) -> list[dict[str, Any]]:
        found = [
            asdict(t)
            for t in self.transactions
            if (order_id is None or t.order_id == order_id)
            and (customer_id is None or t.customer_id == customer_id)
        ]
        return found[-limit:]


def _check_id(name: str, value: str) -> None:
    if not ID.fullmatch(value):
        raise ToolError(f"{name} must be 1-64 letters, digits, '_' or '-'")


def _money(amount: Any) -> Decimal:
    """A positive amount with at most two decimals, up to 1,000,000 (exact: read from its text)."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float, str)):
        raise ToolError("amount must be a number")
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        raise ToolError("amount must be a number") from None
    if not value.is_finite() or value <= 0 or value > MAX_AMOUNT:
        raise ToolError("amount must be more than 0 and at most 1000000")
    if value != value.quantize(CENT):
        raise ToolError("amount may have at most two decimals")
    return value.quantize(CENT)


def _currency(currency: str) -> str:
    if currency not in ("EUR", "USD", "GBP"):
        raise ToolError("currency must be EUR, USD or GBP")
    return currency


def _order_view(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "customer_id": order.customer_id,
        "amount": str(order.amount),
        "currency": order.currency,
        "refunded": str(order.refunded),
        "refundable": str(order.amount - order.refunded),
    }


def build_server() -> MCPServer[Any]:
    ledger = Ledger()
    mcp = MCPServer(
        "payments",
        version="1.0.0",
        instructions="A payments ledger. Listing is read-only; refunds and charges move money.",
        log_level="WARNING",
    )

    @mcp.tool(title="List transactions", annotations=READ)
    async def list_transactions(
        order_id: str | None = None, customer_id: str | None = None, limit: int = 50
    ) -> str:
        """The most recent transactions (charges and refunds), optionally of one order or customer."""
        if not 1 <= limit <= 500:
            raise ToolError("limit must be 1-500")
        return json.dumps(ledger.listing(order_id, customer_id, limit))

    @mcp.tool(title="Refund an order", annotations=MONEY)
    async def refund(order_id: str, amount: float, currency: Currency, reason: RefundReason) -> str:
        """Refund part or all of a paid order, in the order's currency."""
        return json.dumps(ledger.refund(order_id, amount, currency, reason))

    @mcp.tool(title="Charge a customer", annotations=MONEY)
    async def charge(customer_id: str, amount: float, currency: Currency) -> str:
        """Charge a customer; creates a new order."""
        return json.dumps(ledger.charge(customer_id, amount, currency))

    return mcp


def main() -> None:
    args = make_parser("Demo payments MCP server.", default_port=8803).parse_args()
    serve(build_server(), args)


if __name__ == "__main__":
    main()
