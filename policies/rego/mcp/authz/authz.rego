# The organisation's baseline, with the same meaning as policies/cedar/.
#
# decision is {"effect": "allow" | "deny" | "require_approval", "reasons": [{id, message}]}:
# a hard deny beats an approval gate, an approval gate beats a permit, no permit is deny.
package mcp.authz

default decision := {"effect": "deny", "reasons": [{"id": "no_permit", "message": "no policy permits this request"}]}

decision := {"effect": "deny", "reasons": sorted_reasons(deny)} if {
	count(deny) > 0
} else := {"effect": "require_approval", "reasons": sorted_reasons(approval)} if {
	count(approval) > 0
	count(permit) > 0
} else := {"effect": "deny", "reasons": sorted_reasons(approval)} if {
	count(approval) > 0
} else := {"effect": "allow", "reasons": sorted_reasons(permit)} if {
	count(permit) > 0
}

sorted_reasons(set) := [r | some id in sort([x.id | some x in set]); some r in set; r.id == id]

list_actions := {"list_tools", "list_resources", "list_prompts"}

read_actions := {"read_resource", "get_prompt", "complete"}

permit contains {"id": "list-everything", "message": "anyone may see which servers exist; what they may use is decided per item"} if {
	input.action in list_actions
}

permit contains {"id": "read-only-tools", "message": "tools that only read are allowed"} if {
	input.action == "call_tool"
	input.resource.annotations.readOnlyHint
}

permit contains {"id": "engineers-change-things", "message": "engineers may use tools that change things"} if {
	input.action == "call_tool"
	"engineer" in input.principal.roles
}

permit contains {"id": "read-resources-and-prompts", "message": "resources, prompts and completions are readable"} if {
	input.action in read_actions
}

approval contains {"id": "destructive-needs-approval", "message": "destructive tools need a human approval"} if {
	input.action == "call_tool"
	input.resource.annotations.destructiveHint
	not input.context.approval.granted
}

deny contains {"id": "uninterpretable-arguments", "message": "some argument could not be interpreted safely"} if {
	count(input.context.problems) > 0
}
