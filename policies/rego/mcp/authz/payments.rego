# Payments (policies/cedar/payments.cedar).
package mcp.authz

import data.mcp.lib.args
import data.mcp.lib.org
import data.mcp.lib.tools

deny contains {
	"id": "payments-amount-invalid",
	"message": "payment amounts must be numbers above 0 and at most 1000000",
} if {
	moves_money
	not input.context.listing
	not valid_amount(input.context.arguments)
}

deny contains {"id": "payments-currency-not-supported", "message": "payments are in EUR, USD or GBP"} if {
	moves_money
	not input.context.listing
	not supported_currency(input.context.arguments)
}

approval contains {
	"id": "payments-over-limit",
	"message": "refunds and charges over 500 need a human approval",
} if {
	moves_money
	org.over_limit(args.number(input.context.arguments, "amount"))
	not input.context.approval.granted
}

# Negated helpers take the arguments whole (see staging in release.rego).
valid_amount(arguments) if org.valid_amount(args.number(arguments, "amount"))

supported_currency(arguments) if args.text(arguments, "currency") in org.currencies

moves_money if {
	input.action == "call_tool"
	some tool in {"refund", "charge"}
	tools.is_tool(input.resource, "payments", tool)
}
