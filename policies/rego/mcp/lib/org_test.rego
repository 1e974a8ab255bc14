package mcp.lib.org_test

import data.mcp.lib.org

acme := {"type": "User", "id": "alice", "tenant": "acme", "roles": ["engineer"], "claims": {}, "acting_for": null}

server(tenants) := {"type": "Server", "id": "s", "server": "s", "tenants": tenants}

test_principal_tenant if {
	org.principal_tenant(acme) == "acme"
	not org.principal_tenant(object.union(acme, {"tenant": null}))
	not org.principal_tenant(object.union(acme, {"tenant": ""}))
}

test_a_tenant_uses_its_own_and_shared_servers if {
	not org.isolated(acme, server(["acme"]))
	not org.isolated(acme, server(["acme", "globex"]))
}

test_a_tenant_does_not_use_other_servers if {
	org.isolated(acme, server(["globex"]))
	org.isolated(acme, server([]))
	org.isolated(object.union(acme, {"tenant": "initech"}), server(["initech"]))
}

test_no_tenant_uses_only_servers_of_no_listed_tenant if {
	nobody := object.union(acme, {"tenant": null})
	not org.isolated(nobody, server([]))
	not org.isolated(nobody, server(["initech"]))
	org.isolated(nobody, server(["acme"]))
	org.isolated(nobody, server(["globex", "initech"]))
}

test_roles if {
	org.has_role(acme, "engineer")
	not org.has_role(acme, "admin")
}

test_acting_for_is_for_agents_only if {
	agent := {"type": "Agent", "id": "bot", "roles": [], "claims": {}, "acting_for": "alice"}
	org.acting_for(agent) == "alice"
	not org.unattended_agent(agent)
	org.unattended_agent(object.union(agent, {"acting_for": null}))
	org.unattended_agent(object.union(agent, {"acting_for": ""}))
	not org.acting_for(object.union(acme, {"acting_for": "bob"}))
	not org.unattended_agent(acme)
}

test_release_managers_are_users if {
	dana := {"type": "User", "id": "dana", "roles": [], "claims": {}, "acting_for": null}
	org.release_manager(dana)
	org.release_manager(object.union(dana, {"id": "erin"}))
	not org.release_manager(object.union(dana, {"id": "alice"}))
	not org.release_manager(object.union(dana, {"type": "Agent"}))
	not org.release_manager(object.union(dana, {"type": "Agent", "id": "release-bot", "acting_for": "dana"}))
}

test_business_hours if {
	org.business_hours(0, 8)
	org.business_hours(4, 17)
	not org.business_hours(4, 18)
	not org.business_hours(2, 7)
	not org.business_hours(5, 12)
	not org.business_hours(6, 12)
}

test_break_glass if {
	admin := {"type": "User", "id": "ada", "roles": ["admin"], "claims": {"mfa": "true", "incident": "INC-1"}}
	org.break_glass(admin)
	not org.break_glass(object.union(admin, {"type": "Agent"}))
	not org.break_glass(object.union(admin, {"roles": ["engineer"]}))
	not org.break_glass(object.union(admin, {"claims": {"mfa": "false"}}))
	not org.break_glass(object.union(admin, {"claims": {"incident": "inc-1"}}))
	not org.break_glass({"type": "User", "id": "ada", "roles": ["admin"], "claims": {"mfa": "true"}})
}

test_branches if {
	org.protected_branch("main")
	org.protected_branch("release/1.0")
	not org.protected_branch("Main")
	not org.protected_branch("refs/heads/main")
	org.allowed_branch("main")
	org.allowed_branch("feature/login")
	org.allowed_branch("fix/typo")
	not org.allowed_branch("hotfix")
	not org.allowed_branch("feature/../main")
	not org.allowed_branch("refs/heads/main")
}

test_hosts if {
	org.hosts_allowed(["docs.python.org", "pypi.org"])
	org.hosts_allowed([])
	not org.hosts_allowed(["pypi.org", "evil.example"])
	not org.hosts_allowed(["www.github.com"])
}

test_amounts if {
	org.valid_amount(0.01)
	org.valid_amount(1000000)
	not org.valid_amount(0)
	not org.valid_amount(-1)
	not org.valid_amount(1000000.5)
	org.over_limit(500.01)
	not org.over_limit(500)
	not org.over_limit(2000000)
}
