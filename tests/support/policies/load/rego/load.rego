# Test-only: the same meaning as ../cedar/load.cedar, in Rego.
package mcp.authz

import rego.v1

lists := {"list_tools", "list_resources", "list_prompts"}

denied_tools := {"counter__reset", "echo__add"}

forbid contains {"id": "no-resets", "message": "resetting the counters is denied"} if {
	input.action == "call_tool"
	input.resource.id in denied_tools
}

gate contains {"id": "destructive-needs-approval", "message": "destructive tools need a human approval"} if {
	input.action == "call_tool"
	input.resource.annotations.destructiveHint
	not input.context.approval.granted
}

permit contains {"id": "everyone-lists", "message": "lists are open"} if input.action in lists

permit contains {"id": "callers-call", "message": "callers may call tools"} if {
	input.action == "call_tool"
	"caller" in input.principal.roles
}

permit contains {"id": "approvers-approve", "message": "approvers decide pending approvals"} if {
	input.action == "approve"
	"approver" in input.principal.roles
}

default decision := {"effect": "deny", "reasons": [{"id": "no_permit", "message": "no policy permits this request"}]}

decision := {"effect": "deny", "reasons": [r | some r in forbid]} if count(forbid) > 0

decision := {"effect": "require_approval", "reasons": [r | some r in gate]} if {
	count(forbid) == 0
	count(permit) > 0
	count(gate) > 0
}

decision := {"effect": "allow", "reasons": [r | some r in permit]} if {
	count(forbid) == 0
	count(permit) > 0
	count(gate) == 0
}
