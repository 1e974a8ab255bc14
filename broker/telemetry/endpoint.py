"""The `/metrics` route: what Prometheus scrapes.

A Starlette `Route`, so app.py can add it beside `/healthz` on the broker's listener, or
serve it alone on a separate one (`metrics_app`) when the MCP port is exposed and the
metrics should not be. The format follows the scraper's `Accept` header (OpenMetrics or
the Prometheus text format).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.telemetry.metrics import BrokerMetrics


def metrics_route(metrics: BrokerMetrics, path: str = "/metrics") -> Route:
    async def scrape(request: Request) -> Response:
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type, "cache-control": "no-store"})

    return Route(path, scrape, methods=["GET"])


def metrics_app(metrics: BrokerMetrics, path: str = "/metrics") -> Starlette:
    """An ASGI app serving only the metrics route (for a dedicated `metrics.listen` address)."""
    return Starlette(routes=[metrics_route(metrics, path)])
