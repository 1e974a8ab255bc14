# What some roles may never do, and what support may (policies/cedar/roles.cedar).
package mcp.authz

import data.mcp.lib.org
import data.mcp.lib.tools

deny contains {"id": "support-no-source-control", "message": "support may not use source control or releases"} if {
	org.has_role(input.principal, "support")
	tools.on_server(input.resource, {"git", "release"})
}

deny contains {"id": "reviewers-do-not-write", "message": "reviewers may only use tools that read"} if {
	org.has_role(input.principal, "reviewer")
	input.action == "call_tool"
	not tools.read_only(input.resource)
}

permit contains {"id": "support-refunds", "message": "support may refund orders"} if {
	org.has_role(input.principal, "support")
	input.action == "call_tool"
	tools.is_tool(input.resource, "payments", "refund")
}
