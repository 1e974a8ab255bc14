# Who may decide a pending approval (policies/cedar/approvers.cedar).
#
# input.action is "approve", or "self_approve" when the approver is the requester (or the
# user an agent acts for, or an agent acting for the requester); the resource and context
# are those of the call that waits, with context.approval.requester. The approval gates
# are scoped to call_tool and do not apply; tenant-isolation, support-no-source-control
# and uninterpretable-arguments (every action) do.
package mcp.authz

import data.mcp.lib.org
import data.mcp.lib.tools

decide_actions := {"approve", "self_approve"}

permit contains {"id": "approvers-approve", "message": "approvers may decide pending calls of their tenant"} if {
	input.action == "approve"
	org.has_role(input.principal, "approver")
}

permit contains {"id": "finance-approves-payments", "message": "finance may decide pending refunds and charges"} if {
	input.action == "approve"
	org.has_role(input.principal, "finance")
	input.resource.type == "Tool"
	some tool in {"refund", "charge"}
	tools.is_tool(input.resource, "payments", tool)
}

permit contains {
	"id": "release-managers-approve-releases",
	"message": "the release managers (dana, erin) may decide pending pushes, resets and deploys",
} if {
	input.action == "approve"
	org.release_manager(input.principal)
	tools.on_server(input.resource, {"release"})
}

permit contains {
	"id": "engineers-self-approve-notes",
	"message": "engineers may approve their own calls on the notes server",
} if {
	input.action == "self_approve"
	org.has_role(input.principal, "engineer")
	tools.on_server(input.resource, {"notes"})
}

deny contains {"id": "agents-do-not-approve", "message": "agents may not decide approvals"} if {
	input.action in decide_actions
	input.principal.type == "Agent"
}

deny contains {"id": "reviewers-do-not-approve", "message": "reviewers may not decide approvals"} if {
	input.action in decide_actions
	org.has_role(input.principal, "reviewer")
}

deny contains {"id": "approvers-same-tenant", "message": "approvals are decided within the requester's tenant"} if {
	input.action in decide_actions
	requester_tenant := input.context.approval.requester_tenant
	not same_tenant(input.principal, requester_tenant)
}

same_tenant(principal, tenant) if principal.tenant == tenant
