# Agents (policies/cedar/agents.cedar).
package mcp.authz

import data.mcp.lib.org
import data.mcp.lib.tools

deny contains {
	"id": "unattended-agents-read-only",
	"message": "an agent that does not act for a user may only use tools that read",
} if {
	input.action == "call_tool"
	org.unattended_agent(input.principal)
	not tools.read_only(input.resource)
}

deny contains {"id": "agents-do-not-charge", "message": "agents may not charge customers"} if {
	input.action == "call_tool"
	input.principal.type == "Agent"
	tools.is_tool(input.resource, "payments", "charge")
}

deny contains {
	"id": "release-bot-scope",
	"message": "the release bot may only use the release server and read-only git tools",
} if {
	input.action == "call_tool"
	release_bot
	not release_bot_may_use(input.resource)
}

deny contains {
	"id": "release-bot-acts-for-release-managers",
	"message": "the release bot acts only for the release managers (dana, erin)",
} if {
	input.action == "call_tool"
	release_bot
	not acts_for_release_manager(input.principal)
}

acts_for_release_manager(principal) if org.acting_for(principal) in org.release_managers

release_bot if {
	input.principal.type == "Agent"
	input.principal.id == "release-bot"
}

release_bot_may_use(resource) if resource.server == "release"

release_bot_may_use(resource) if {
	resource.server == "git"
	tools.read_only(resource)
}
