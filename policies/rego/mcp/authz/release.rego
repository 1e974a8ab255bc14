# The shared remote and the deployment pipeline (policies/cedar/release.cedar).
package mcp.authz

import data.mcp.lib.args
import data.mcp.lib.org
import data.mcp.lib.tools

deny contains {
	"id": "release-branch-not-allowed",
	"message": "pushes and resets go to main, release/*, feature/* or fix/* branches only",
} if {
	moves_branch
	not input.context.listing
	not allowed_branch(input.context.arguments)
}

deny contains {
	"id": "no-force-push-to-protected",
	"message": "force-pushing a protected branch (main, release/*) is not allowed",
} if {
	input.action == "call_tool"
	tools.is_tool(input.resource, "release", "push")
	org.protected_branch(args.text(input.context.arguments, "branch"))
	args.not_false(input.context.arguments, "force")
}

approval contains {
	"id": "protected-branch-needs-approval",
	"message": "pushing or resetting a protected branch (main, release/*) needs a human approval",
} if {
	moves_branch
	org.protected_branch(args.text(input.context.arguments, "branch"))
	not input.context.approval.granted
}

approval contains {"id": "production-deploy-needs-approval", "message": "deploying to production needs a human approval"} if {
	production_deploy
	not input.context.approval.granted
}

moves_branch if {
	input.action == "call_tool"
	some tool in {"push", "reset_branch"}
	tools.is_tool(input.resource, "release", tool)
}

# Anything but an explicit "staging" counts as production.
production_deploy if {
	input.action == "call_tool"
	tools.is_tool(input.resource, "release", "deploy")
	not staging(input.context.arguments)
}

# Helpers that are negated take the arguments whole: OPA evaluates a function call nested
# inside `not` (not f(g(x))) before the negation, so an undefined g(x) would make the whole
# rule undefined instead of true.
allowed_branch(arguments) if org.allowed_branch(args.text(arguments, "branch"))

staging(arguments) if args.text(arguments, "environment") == "staging"
