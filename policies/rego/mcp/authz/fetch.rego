# Web fetch (policies/cedar/fetch.cedar).
package mcp.authz

import data.mcp.lib.args
import data.mcp.lib.org
import data.mcp.lib.tools

deny contains {"id": "fetch-host-not-allowed", "message": "fetch may only reach the documentation hosts on the allowlist"} if {
	input.action == "call_tool"
	tools.on_server(input.resource, {"fetch"})
	not org.hosts_allowed(input.context.hosts)
}

deny contains {"id": "fetch-https-only", "message": "fetch needs an https url"} if {
	input.action == "call_tool"
	tools.on_server(input.resource, {"fetch"})
	not input.context.listing
	not https_url(input.context.arguments)
}

https_url(arguments) if startswith(args.text(arguments, "url"), "https://")
