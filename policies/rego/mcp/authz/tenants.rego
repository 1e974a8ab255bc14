# Tenant isolation (policies/cedar/tenants.cedar).
package mcp.authz

import data.mcp.lib.org

deny contains {"id": "tenant-isolation", "message": "tenants never see or use each other's servers"} if {
	org.isolated(input.principal, input.resource)
}
