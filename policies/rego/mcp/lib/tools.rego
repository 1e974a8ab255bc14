# METADATA
# title: The resource of a request
# description: |
#   A tool's behaviour hints with the defaults the Cedar adapter uses when a document does
#   not give them (the catalog always does: not read-only, destructive); its own name; its
#   server.
package mcp.lib.tools

hints(resource) := object.get(resource, "annotations", {})

# METADATA
# title: The tool says it only reads
read_only(resource) if object.get(hints(resource), "readOnlyHint", false) == true

# METADATA
# title: The tool changes things and may destroy (destructiveHint only counts when not read-only)
destructive(resource) if {
	not read_only(resource)
	object.get(hints(resource), "destructiveHint", true) == true
}

# METADATA
# title: The upstream's own name of the tool
name(resource) := object.get(resource, "name", resource.id)

# METADATA
# title: The resource is the named tool of the named server
is_tool(resource, server, tool) if {
	resource.server == server
	name(resource) == tool
}

# METADATA
# title: The resource is served by one of the servers (or is one of them)
on_server(resource, servers) if resource.server in servers
