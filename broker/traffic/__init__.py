"""Traffic management on one machine: rate limits, quotas, concurrency caps, circuit breakers, caching.

A library in the sense of ARCHITECTURE.md: it imports nothing from the front, the gateway or the
other libraries. The gateway builds a `TrafficSubject` from the call and asks each part in turn;
every refusal is a `TrafficRefusal` (errors.py) that carries a reason code, a message and a
retry-after hint. The semantics are described in docs/traffic.md.
"""
