package mcp.authz

default decision := {"effect": "deny", "reasons": []}

# A syntax error on line 6: the closing brace is missing.
decision := {"effect": "allow", "reasons": [] if {
	input.action == "list_tools"
}
