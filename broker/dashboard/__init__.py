"""The operator dashboard (issue #10): live decisions, the approvals queue, upstreams, the tool
registry and the policy in force, served by the broker under `dashboard.path` when enabled.

`app.py` builds a `DecisionFeed` (handed to the gateway, which records every routed call in
it), a `DashboardAccess` (who is looking, and may they: policy action `view_dashboard`) and a
`Dashboard`, whose `mount()` it adds to the HTTP app. See docs/dashboard.md.
"""
