# The change window and break-glass (policies/cedar/hours.cedar).
package mcp.authz

import data.mcp.lib.org
import data.mcp.lib.tools

deny contains {
	"id": "change-window",
	"message": "charges and production deploys happen Monday to Friday, 08:00-18:00 UTC",
} if {
	outside_change_window
	not org.break_glass(input.principal)
}

permit contains {
	"id": "break-glass",
	"message": "break-glass: an admin with MFA and an incident acted outside the change window",
} if {
	outside_change_window
	org.break_glass(input.principal)
}

outside_change_window if {
	input.action == "call_tool"
	not input.context.listing
	windowed
	not org.business_hours(input.context.weekday, input.context.hour)
}

windowed if tools.is_tool(input.resource, "payments", "charge")

windowed if production_deploy
