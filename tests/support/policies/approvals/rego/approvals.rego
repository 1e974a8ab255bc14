# Test-only: the same meaning as ../cedar/approvals.cedar, in Rego.
package mcp.authz

import rego.v1

lists := {"list_tools", "list_resources", "list_prompts"}

uses := {"call_tool", "read_resource", "get_prompt"}

gate contains {"id": "destructive-needs-approval", "message": "destructive tools need a human approval"} if {
	input.action == "call_tool"
	input.resource.annotations.destructiveHint
	not input.context.approval.granted
}

permit contains {"id": "everyone-lists", "message": "lists are open"} if input.action in lists

permit contains {"id": "everyone-calls", "message": "calls are open"} if input.action in uses

permit contains {"id": "approvers-approve", "message": "approvers decide pending approvals"} if {
	input.action == "approve"
	"approver" in input.principal.roles
}

permit contains {"id": "self-approvers", "message": "self-approvers may approve their own calls"} if {
	input.action == "self_approve"
	"self-approver" in input.principal.roles
}

default decision := {"effect": "deny", "reasons": [{"id": "no_permit", "message": "no policy permits this request"}]}

decision := {"effect": "require_approval", "reasons": [r | some r in gate]} if {
	count(permit) > 0
	count(gate) > 0
}

decision := {"effect": "allow", "reasons": [r | some r in permit]} if {
	count(permit) > 0
	count(gate) == 0
}
