# Test-only policy for tests/integration/test_opa_engine.py: one rule, three effects.
#
# deny beats require_approval beats allow; nothing matching falls to the default (deny).
package mcp.authz

default decision := {"effect": "deny", "reasons": [{"id": "no_permit", "message": "no rule permits this"}]}

decision := {"effect": "deny", "reasons": [r | some r in deny]} if {
	count(deny) > 0
} else := {
	"effect": "require_approval",
	"reasons": [r | some r in needs_approval],
	"obligations": [{"type": "notify", "channel": "#approvals"}],
} if {
	allow
	count(needs_approval) > 0
} else := {"effect": "allow", "reasons": [r | some r in permits]} if {
	allow
}

allow if count(permits) > 0

permits contains {"id": "reviewer_github", "message": "reviewers may use the github tools"} if {
	"reviewer" in input.principal.roles
	input.resource.server == "github"
}

# A reason may also be a plain string: the broker reads it as a reason id.
permits contains "read_only" if input.resource.annotations.readOnlyHint == true

deny contains {"id": "blocked_tool", "message": sprintf("tool %s is blocked", [input.resource.id])} if {
	"blocked" in input.resource.tags
}

needs_approval contains {"id": "write_needs_approval", "message": "writes need a human approval"} if {
	"write" in input.resource.tags
	not input.context.approval.granted
}

# Heavy work for one specific tool only: the deadline test. About a second of evaluation on a 2-core machine.
deny contains {"id": "slow", "message": "never reached within the deadline"} if {
	input.resource.id == "slow__tool"
	count([x | some x in numbers.range(1, 600000); x % 7 == 3]) > 0
}
