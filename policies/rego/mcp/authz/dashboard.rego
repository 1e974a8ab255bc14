# Who may view the operator dashboard (policies/cedar/dashboard.cedar).
#
# input.action is "view_dashboard", the resource the broker's own Server "broker:dashboard"
# in no tenant: tenant-isolation keeps principals of a tenant out.
package mcp.authz

import data.mcp.lib.org

permit contains {"id": "operators-view-dashboard", "message": "admins and approvers may view the dashboard"} if {
	input.action == "view_dashboard"
	some role in {"admin", "approver"}
	org.has_role(input.principal, role)
}

deny contains {"id": "agents-do-not-view-dashboard", "message": "agents may not view the dashboard"} if {
	input.action == "view_dashboard"
	input.principal.type == "Agent"
}
