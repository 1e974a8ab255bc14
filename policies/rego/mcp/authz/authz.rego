# METADATA
# title: The organisation policy
# description: |
#   The same rules as policies/cedar/, with the same ids and reasons: every Cedar permit is
#   a `permit` entry here, every forbid a `deny` entry, every @approval forbid an `approval`
#   entry. data.mcp.authz.decision combines them the way the broker combines Cedar's two
#   evaluations: a deny beats an approval requirement, an approval requirement beats an
#   allow, and no permit is a deny. Reasons are sorted by id; a deny names the approval
#   gates that matched too, as Cedar does. Guide: docs/policy-guide.md.
package mcp.authz

import data.mcp.lib.tools

# METADATA
# title: The decision
# description: '{"effect": "allow" | "deny" | "require_approval", "reasons": [{"id", "message"}]}'
# entrypoint: true
default decision := {"effect": "deny", "reasons": [{"id": "no_permit", "message": "no policy permits this request"}]}

decision := {"effect": "deny", "reasons": sorted_reasons(deny | approval)} if {
	count(deny) > 0
} else := {"effect": "require_approval", "reasons": sorted_reasons(approval)} if {
	count(approval) > 0
	count(permit) > 0
} else := {"effect": "deny", "reasons": [{"id": "no_permit", "message": "no policy permits this request"}]} if {
	count(approval) > 0
} else := {"effect": "allow", "reasons": sorted_reasons(permit)} if {
	count(permit) > 0
}

# The reasons of a set, ordered by id (Cedar's reasons come sorted by id too).
sorted_reasons(reasons) := [reason |
	some id in sort({r.id | some r in reasons})
	some reason in reasons
	reason.id == id
]

list_actions := {"list_tools", "list_resources", "list_prompts"}

read_actions := {"read_resource", "get_prompt", "complete"}

# --- grants (policies/cedar/base.cedar) ---

permit contains {
	"id": "list-servers",
	"message": "a server's lists are visible; each item is shown only if its use would be allowed",
} if {
	input.action in list_actions
}

permit contains {"id": "read-only-tools", "message": "tools that only read are allowed"} if {
	input.action == "call_tool"
	tools.read_only(input.resource)
}

permit contains {"id": "read-resources-and-prompts", "message": "resources, prompts and completions are readable"} if {
	input.action in read_actions
}

permit contains {"id": "engineers-change-things", "message": "engineers may use tools that change things"} if {
	input.action == "call_tool"
	"engineer" in input.principal.roles
}

permit contains {"id": "admins-change-things", "message": "admins may use tools that change things"} if {
	input.action == "call_tool"
	"admin" in input.principal.roles
}

deny contains {"id": "uninterpretable-arguments", "message": "some argument could not be interpreted safely"} if {
	count(input.context.problems) > 0
}

deny contains {
	"id": "truncated-arguments",
	"message": "arguments were cut to size and could not be checked completely",
} if {
	input.action == "call_tool"
	count(input.context.argument_limits) > 0
	tools.on_server(input.resource, {"fs", "fetch", "payments", "release"})
}

# --- the generic approval gate (policies/cedar/approvals.cedar) ---

approval contains {"id": "destructive-needs-approval", "message": "destructive tools need a human approval"} if {
	input.action == "call_tool"
	tools.destructive(input.resource)
	not input.context.approval.granted
}
