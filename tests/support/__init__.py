"""Helpers shared by the broker's tests: real broker processes, config builders, tool paths."""
