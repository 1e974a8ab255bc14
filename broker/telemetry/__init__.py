"""Telemetry of the broker: Prometheus metrics, OpenTelemetry traces, JSON logs.

Each part is a plain class built by `app.py` from config and passed in; none of them
touches a process-wide default (the global Prometheus registry, the global tracer
provider), so two brokers in one process, or a test beside a broker, never mix.
"""
