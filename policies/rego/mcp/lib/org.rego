# METADATA
# title: The organisation
# description: |
#   Tenants, roles, agents, the change window, branches, hosts and money limits: the
#   organisation's facts, shared by the rules in package mcp.authz. Every value here is
#   written as a literal in policies/cedar/ too; change both.
package mcp.lib.org

# The organisation's tenants (policies/cedar/tenants.cedar lists them too).
tenants := {"acme", "globex"}

# The release managers: the users the release bot may act for, who decide release approvals.
release_managers := {"dana", "erin"}

# Hosts fetch may reach.
fetch_hosts := {"docs.python.org", "github.com", "modelcontextprotocol.io", "pypi.org"}

currencies := {"EUR", "USD", "GBP"}

# Amounts above this need an approval; amounts above max_amount are invalid.
approval_limit := 500

max_amount := 1000000

# METADATA
# title: The principal's tenant
# description: Defined when the principal has a tenant (a non-empty string), as in Cedar.
principal_tenant(principal) := tenant if {
	tenant := principal.tenant
	is_string(tenant)
	tenant != ""
}

# METADATA
# title: The principal may not use the resource's server
# description: |
#   A principal of a tenant uses only servers configured for that tenant, and only for
#   the listed tenants; a principal without a tenant only servers of no listed tenant.
isolated(principal, resource) if {
	tenant := principal_tenant(principal)
	not serves(resource, tenant)
}

isolated(principal, resource) if {
	not principal_tenant(principal)
	some tenant in resource.tenants
	tenant in tenants
}

serves(resource, tenant) if {
	tenant in tenants
	tenant in resource.tenants
}

# METADATA
# title: The principal holds the role
has_role(principal, role) if role in principal.roles

# METADATA
# title: The user an agent acts for
# description: Defined for an agent with a non-empty acting_for (Cedar `principal has acting_for`).
acting_for(principal) := user if {
	principal.type == "Agent"
	user := principal.acting_for
	is_string(user)
	user != ""
}

# METADATA
# title: The principal is a release manager
# description: A User (never an agent) whose id is one of release_managers.
release_manager(principal) if {
	principal.type == "User"
	principal.id in release_managers
}

# METADATA
# title: An agent acting for nobody
unattended_agent(principal) if {
	principal.type == "Agent"
	not acting_for(principal)
}

# METADATA
# title: Business hours
# description: Monday to Friday (weekday 0-4), 08:00-17:59 UTC.
business_hours(weekday, hour) if {
	weekday <= 4
	hour >= 8
	hour < 18
}

# METADATA
# title: Break-glass
# description: A User with the admin role, an MFA login and an incident reference.
break_glass(principal) if {
	principal.type == "User"
	has_role(principal, "admin")
	principal.claims.mfa == "true"
	startswith(principal.claims.incident, "INC-")
}

# METADATA
# title: A protected branch (main, release/*)
protected_branch(branch) if branch == "main"

protected_branch(branch) if startswith(branch, "release/")

# METADATA
# title: A branch pushes and resets may name
allowed_branch(branch) if {
	known_branch(branch)
	not contains(branch, "..")
}

known_branch(branch) if protected_branch(branch)

known_branch(branch) if startswith(branch, "feature/")

known_branch(branch) if startswith(branch, "fix/")

# METADATA
# title: Every host is on the fetch allowlist
hosts_allowed(hosts) if {
	every host in hosts {
		host in fetch_hosts
	}
}

# METADATA
# title: A valid amount (above 0, at most max_amount)
valid_amount(amount) if {
	amount > 0
	amount <= max_amount
}

# METADATA
# title: A valid amount over the approval limit
over_limit(amount) if {
	valid_amount(amount)
	amount > approval_limit
}
