# Test-only (tests/e2e/test_traffic.py): the same meaning as cedar/policy.cedar.
package mcp.authz

hit := input.action == "call_tool" if input.resource.name == "hit"

default hit := false

decision := {
	"effect": "allow",
	"reasons": [{"id": "hits-are-rationed", "message": "hits are rationed by policy"}],
	"obligations": [{"type": "rate_limit", "name": "hits-are-rationed", "limits": ["2/minute"], "per": ["principal", "tool"]}],
} if hit

decision := {"effect": "allow", "reasons": [{"id": "allow-all", "message": "test policy: everything is allowed"}]} if not hit
