package mcp.authz

default decision := {"effect": "deny", "reasons": []}

# Parses and compiles, but `opa check --strict` refuses the unused variable on line 7.
decision := {"effect": "allow", "reasons": []} if {
	unused := input.principal.id
	input.action == "list_tools"
}
