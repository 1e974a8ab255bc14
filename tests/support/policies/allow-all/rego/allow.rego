# Test-only: every request is allowed.
package mcp.authz

decision := {"effect": "allow", "reasons": [{"id": "allow-all", "message": "test policy: everything is allowed"}]}
