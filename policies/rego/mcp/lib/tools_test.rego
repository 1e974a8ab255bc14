package mcp.lib.tools_test

import data.mcp.lib.tools

hinted(read_only, destructive) := {
	"type": "Tool", "id": "s__t", "name": "t", "server": "s", "tenants": [],
	"annotations": {"readOnlyHint": read_only, "destructiveHint": destructive, "idempotentHint": false, "openWorldHint": false},
}

test_read_only if {
	tools.read_only(hinted(true, false))
	not tools.read_only(hinted(false, false))
	not tools.read_only({"type": "Tool", "id": "x", "server": "s"})
}

test_destructive_only_counts_when_not_read_only if {
	tools.destructive(hinted(false, true))
	not tools.destructive(hinted(false, false))
	not tools.destructive(hinted(true, true))
}

test_missing_hints_are_the_worst_case if {
	tools.destructive({"type": "Tool", "id": "x", "server": "s"})
	not tools.destructive({"type": "Tool", "id": "x", "server": "s", "annotations": {"destructiveHint": null}})
}

test_name_falls_back_to_the_id if {
	tools.name(hinted(true, false)) == "t"
	tools.name({"type": "Tool", "id": "s__t", "server": "s"}) == "s__t"
}

test_is_tool_and_on_server if {
	tools.is_tool(hinted(true, false), "s", "t")
	not tools.is_tool(hinted(true, false), "other", "t")
	tools.on_server(hinted(true, false), {"s", "x"})
	not tools.on_server(hinted(true, false), {"x"})
}
