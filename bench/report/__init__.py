"""The benchmark report of issue #10: one workload through every path, one table and one chart.

`python -m bench.report` runs it (see bench/README.md, "Benchmark report"). The modules:
`workload` (sessions and timing), `paths` (direct and broker paths), `bench.peers` (other gateways),
`machine` (what it ran on), `table` (Markdown) and `chart` (PNG).
"""
