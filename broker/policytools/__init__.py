"""`mcp-broker policy …`: the tooling around the policies (docs/policy-cli.md).

`catalog` snapshots what the upstreams offer, `test` runs decision cases through the
broker's own engine adapters, `check` and `fmt` keep both policy languages valid and
formatted, `diff` shows which decisions a change of policies changes, `explain` shows why a
request is decided the way it is.
"""
