# Test-only rules that answer something other than a decision object: the engine must deny.
package mcp.garbage

text := "allow"

maybe := {"effect": "maybe", "reasons": []}

bad_reasons := {"effect": "allow", "reasons": [42]}

bad_obligations := {"effect": "allow", "reasons": [], "obligations": "redact"}

# Defined only for an action that never occurs, and no default: undefined for every input.
no_default := {"effect": "allow", "reasons": []} if input.action == "no_such_action"

# Two values for one input (a call_tool on github): OPA answers HTTP 500 eval_conflict_error.
conflict := {"effect": "allow", "reasons": []} if input.action == "call_tool"

conflict := {"effect": "deny", "reasons": []} if input.resource.server == "github"
