# The workspace filesystem (policies/cedar/filesystem.cedar).
package mcp.authz

import data.mcp.lib.paths
import data.mcp.lib.tools

deny contains {"id": "fs-outside-workspace", "message": "filesystem tools may only use paths inside /workspace"} if {
	input.action == "call_tool"
	tools.on_server(input.resource, {"fs"})
	count(paths.outside(input.context.arguments)) > 0
}

deny contains {
	"id": "fs-unchecked-path",
	"message": "filesystem calls may name paths only in path, source or destination (one path each)",
} if {
	input.action == "call_tool"
	tools.on_server(input.resource, {"fs"})
	count(paths.unchecked(input.context.arguments, input.context.paths)) > 0
}
