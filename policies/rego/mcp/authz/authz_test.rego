package mcp.authz_test

import data.mcp.authz

# -- building requests ----------------------------------------------------------------------------

alice := {"type": "User", "id": "alice", "tenant": "acme", "roles": ["engineer"], "claims": {}, "acting_for": null}

hints(read_only, destructive) := {
	"readOnlyHint": read_only, "destructiveHint": destructive,
	"idempotentHint": false, "openWorldHint": false,
}

tool(server, name, read_only, destructive) := {
	"type": "Tool", "id": concat("__", [server, name]), "name": name, "server": server,
	"tenants": ["acme"], "tags": [], "annotations": hints(read_only, destructive),
}

context := {
	"arguments": {}, "argument_digest": "sha256:0", "paths": [], "hosts": [],
	"argument_limits": {}, "problems": [], "transport": "streamable-http",
	"protocol_version": "2025-11-25", "time": "2026-01-07T10:00:00Z", "hour": 10, "weekday": 2,
	"session": null, "trace_id": null, "listing": false, "approval": {"granted": false},
}

# A call_tool request by alice; `extra` is merged in (objects recursively).
call(resource, extra) := object.union(
	{"principal": alice, "action": "call_tool", "resource": resource, "context": context},
	extra,
)

args(arguments) := {"context": {"arguments": arguments}}

effect(request) := decision.effect if {
	decision := authz.decision with input as request
}

ids(request) := [r.id | some r in decision.reasons] if {
	decision := authz.decision with input as request
}

read_note := tool("notes", "read_note", true, false)

write_note := tool("notes", "write_note", false, false)

delete_note := tool("notes", "delete_note", false, true)

refund := tool("payments", "refund", false, false)

charge := tool("payments", "charge", false, false)

push := tool("release", "push", false, false)

deploy := tool("release", "deploy", false, false)

read_file := tool("fs", "read_text_file", true, true)

fetch := tool("fetch", "fetch", true, false)

# -- combining ------------------------------------------------------------------------------------

test_allow_names_every_permit_sorted if {
	ids(call(read_note, {})) == ["engineers-change-things", "read-only-tools"]
	effect(call(read_note, {})) == "allow"
}

test_no_permit_is_a_deny if {
	request := call(write_note, {"principal": {"roles": []}})
	effect(request) == "deny"
	ids(request) == ["no_permit"]
}

test_a_gate_with_a_permit_requires_approval if {
	effect(call(delete_note, {})) == "require_approval"
	ids(call(delete_note, {})) == ["destructive-needs-approval"]
}

test_an_approval_lifts_the_gate if {
	effect(call(delete_note, {"context": {"approval": {"granted": true, "approver": "bob"}}})) == "allow"
}

test_a_gate_without_a_permit_is_no_permit if {
	request := call(delete_note, {"principal": {"roles": []}})
	effect(request) == "deny"
	ids(request) == ["no_permit"]
}

test_a_deny_beats_a_gate_and_names_both if {
	request := call(delete_note, {"principal": {"roles": ["reviewer"]}})
	effect(request) == "deny"
	ids(request) == ["destructive-needs-approval", "reviewers-do-not-write"]
}

test_sorted_reasons_orders_by_id if {
	authz.sorted_reasons({{"id": "b", "message": ""}, {"id": "a", "message": ""}}) == [
		{"id": "a", "message": ""},
		{"id": "b", "message": ""},
	]
}

# -- grants ---------------------------------------------------------------------------------------

test_lists_resources_and_prompts if {
	server := {"type": "Server", "id": "notes", "name": "notes", "server": "notes", "tenants": ["acme"]}
	effect(call(server, {"action": "list_tools"})) == "allow"
	note := {"type": "Resource", "id": "notes+notes://index", "uri": "notes+notes://index", "server": "notes", "tenants": ["acme"], "tags": []}
	ids(call(note, {"action": "read_resource"})) == ["read-resources-and-prompts"]
}

test_admins_change_things if {
	ids(call(write_note, {"principal": {"roles": ["admin"]}})) == ["admins-change-things"]
}

test_support_refunds_but_does_not_write if {
	support := {"principal": {"roles": ["support"]}}
	ids(call(refund, object.union(support, args({"amount": 10, "currency": "EUR"})))) == ["support-refunds"]
	ids(call(write_note, support)) == ["no_permit"]
}

# -- forbids --------------------------------------------------------------------------------------

test_problems_and_cut_arguments if {
	"uninterpretable-arguments" in ids(call(read_note, {"context": {"problems": ["path: path.unc"]}}))
	"truncated-arguments" in ids(call(read_file, {"context": {"argument_limits": {"truncated": {"x": 2000}}}}))
	effect(call(read_note, {"context": {"argument_limits": {"truncated": {"x": 2000}}}})) == "allow"
}

test_tenant_isolation if {
	ids(call(read_note, {"principal": {"tenant": "globex"}})) == ["tenant-isolation"]
}

test_support_and_source_control if {
	ids(call(tool("git", "git_status", true, false), {"principal": {"roles": ["support"]}})) == ["support-no-source-control"]
}

test_agents if {
	unattended := {"principal": {"type": "Agent", "id": "cron", "acting_for": null}}
	ids(call(write_note, unattended)) == ["unattended-agents-read-only"]
	effect(call(read_note, unattended)) == "allow"
	copilot := {"principal": {"type": "Agent", "id": "copilot", "acting_for": "alice"}}
	"agents-do-not-charge" in ids(call(charge, object.union(copilot, args({"amount": 10, "currency": "EUR"}))))
}

test_release_bot if {
	bot := {"principal": {"type": "Agent", "id": "release-bot", "acting_for": "dana"}}
	effect(call(push, object.union(bot, args({"branch": "feature/x"})))) == "allow"
	effect(call(tool("git", "git_log", true, false), bot)) == "allow"
	ids(call(write_note, bot)) == ["release-bot-scope"]
	ids(call(push, object.union(bot, {"principal": {"acting_for": "alice"}, "context": {"arguments": {"branch": "feature/x"}}}))) == ["release-bot-acts-for-release-managers"]
	ids(call(tool("release", "list_branches", true, false), object.union(bot, {"principal": {"acting_for": null}}))) == ["release-bot-acts-for-release-managers"]
}

test_filesystem if {
	effect(call(read_file, object.union(args({"path": "/workspace/a"}), {"context": {"paths": ["/workspace/a"]}}))) == "allow"
	ids(call(read_file, object.union(args({"path": "/etc/passwd"}), {"context": {"paths": ["/etc/passwd"]}}))) == ["fs-outside-workspace"]
	ids(call(read_file, object.union(args({"paths": ["/workspace/a"]}), {"context": {"paths": ["/workspace/a"]}}))) == ["fs-unchecked-path"]
}

test_fetch if {
	ok := object.union(args({"url": "https://pypi.org/"}), {"context": {"hosts": ["pypi.org"]}})
	effect(call(fetch, ok)) == "allow"
	ids(call(fetch, object.union(args({"url": "https://evil.example/"}), {"context": {"hosts": ["evil.example"]}}))) == ["fetch-host-not-allowed"]
	ids(call(fetch, object.union(args({"url": "http://pypi.org/"}), {"context": {"hosts": ["pypi.org"]}}))) == ["fetch-https-only"]
	effect(call(fetch, {"context": {"listing": true}})) == "allow"
}

test_payments if {
	effect(call(refund, args({"amount": 120.5, "currency": "EUR"}))) == "allow"
	ids(call(refund, args({"amount": 900, "currency": "EUR"}))) == ["payments-over-limit"]
	ids(call(refund, args({"amount": -1, "currency": "EUR"}))) == ["payments-amount-invalid"]
	ids(call(refund, args({"currency": "EUR"}))) == ["payments-amount-invalid"]
	ids(call(refund, args({"amount": 10, "currency": "eur"}))) == ["payments-currency-not-supported"]
	effect(call(refund, {"context": {"listing": true}})) == "allow"
}

test_release if {
	effect(call(push, args({"branch": "feature/x"}))) == "allow"
	ids(call(push, args({"branch": "main"}))) == ["protected-branch-needs-approval"]
	ids(call(push, args({"branch": "hotfix"}))) == ["release-branch-not-allowed"]
	ids(call(push, args({"branch": "release/1.0", "force": true}))) == ["no-force-push-to-protected", "protected-branch-needs-approval"]
	effect(call(deploy, args({"environment": "staging"}))) == "allow"
	ids(call(deploy, args({"environment": "production"}))) == ["production-deploy-needs-approval"]
	ids(call(deploy, {})) == ["production-deploy-needs-approval"]
}

test_change_window_and_break_glass if {
	night := {"context": {"hour": 22, "arguments": {"amount": 10, "currency": "EUR"}}}
	ids(call(charge, night)) == ["change-window"]
	glass := {"principal": {"roles": ["admin"], "claims": {"mfa": "true", "incident": "INC-9"}}}
	ids(call(charge, object.union(night, glass))) == ["admins-change-things", "break-glass"]
	effect(call(charge, object.union(night, {"context": {"listing": true}}))) == "allow"
	ids(call(deploy, {"context": {"weekday": 6, "arguments": {"environment": "production"}}})) == ["change-window", "production-deploy-needs-approval"]
	effect(call(deploy, {"context": {"weekday": 6, "arguments": {"environment": "staging"}}})) == "allow"
}

# -- who may approve (policies/cedar/approvers.cedar) ---------------------------------------------

# `who` deciding the approval of alice's pending call on `resource`, asked with `action`.
deciding(who, action, resource, extra) := object.union(
	call(resource, {
		"principal": who, "action": action,
		"context": {"approval": {"granted": false, "id": "apr-1", "requester": "alice"}},
	}),
	extra,
)

person(id, roles) := {"type": "User", "id": id, "tenant": "acme", "roles": roles, "claims": {}, "acting_for": null}

test_approvers_decide_any_call_of_their_tenant if {
	avery := person("avery", ["approver"])
	ids(deciding(avery, "approve", delete_note, {})) == ["approvers-approve"]
	ids(deciding(avery, "approve", refund, args({"amount": 900, "currency": "EUR"}))) == ["approvers-approve"]
	ids(deciding(avery, "approve", deploy, {})) == ["approvers-approve"]
	ids(deciding(object.union(avery, {"tenant": "globex"}), "approve", delete_note, {})) == ["tenant-isolation"]
	ids(deciding(avery, "self_approve", delete_note, {})) == ["no_permit"]
}

test_finance_decides_refunds_and_charges_only if {
	fiona := person("fiona", ["finance"])
	ids(deciding(fiona, "approve", refund, args({"amount": 900, "currency": "EUR"}))) == ["finance-approves-payments"]
	ids(deciding(fiona, "approve", charge, {})) == ["finance-approves-payments"]
	ids(deciding(fiona, "approve", deploy, {})) == ["no_permit"]
	ids(deciding(fiona, "approve", tool("payments", "list_transactions", true, false), {})) == ["no_permit"]
	prompt := {"type": "Prompt", "id": "payments__refund", "name": "refund", "server": "payments", "tenants": ["acme"], "tags": []}
	ids(deciding(fiona, "approve", prompt, {})) == ["no_permit"]
}

test_release_managers_decide_release_calls if {
	dana := person("dana", ["engineer"])
	ids(deciding(dana, "approve", deploy, {})) == ["release-managers-approve-releases"]
	ids(deciding(dana, "approve", push, args({"branch": "main"}))) == ["release-managers-approve-releases"]
	ids(deciding(dana, "approve", refund, {})) == ["no_permit"]
	ids(deciding(person("alice", ["engineer"]), "approve", deploy, {})) == ["no_permit"]
	ids(deciding(person("dana", ["support"]), "approve", deploy, {})) == ["support-no-source-control"]
}

test_engineers_self_approve_on_notes_only if {
	ids(deciding(alice, "self_approve", delete_note, {})) == ["engineers-self-approve-notes"]
	ids(deciding(alice, "approve", delete_note, {})) == ["no_permit"]
	ids(deciding(alice, "self_approve", tool("fs", "write_file", false, true), {})) == ["no_permit"]
	ids(deciding(alice, "self_approve", refund, {})) == ["no_permit"]
	ids(deciding(person("sam", ["support"]), "self_approve", delete_note, {})) == ["no_permit"]
}

test_agents_and_reviewers_decide_nothing if {
	bot := {"type": "Agent", "id": "copilot", "tenant": "acme", "roles": ["approver", "engineer"], "claims": {}, "acting_for": "alice"}
	ids(deciding(bot, "approve", delete_note, {})) == ["agents-do-not-approve"]
	effect(deciding(bot, "approve", delete_note, {})) == "deny"
	effect(deciding(bot, "self_approve", delete_note, {})) == "deny"
	"agents-do-not-approve" in ids(deciding(bot, "self_approve", delete_note, {}))
	rita := person("rita", ["approver", "reviewer"])
	effect(deciding(rita, "approve", delete_note, {})) == "deny"
	"reviewers-do-not-approve" in ids(deciding(rita, "approve", delete_note, {}))
	ids(deciding(person("rita", ["engineer", "reviewer"]), "self_approve", delete_note, {})) == ["reviewers-do-not-approve"]
}

test_deciding_is_not_a_call if {
	# the call's own gates and call_tool forbids do not answer for the approver
	avery := person("avery", ["approver"])
	night := {"context": {"hour": 22, "arguments": {"amount": 900, "currency": "EUR"}, "argument_limits": {"truncated": {"x": 2000}}}}
	ids(deciding(avery, "approve", charge, night)) == ["approvers-approve"]
	ids(deciding(avery, "approve", delete_note, {"context": {"problems": ["path: nul"]}})) == ["uninterpretable-arguments"]
}

# A tool on a server both tenants share.
shared_write := object.union(tool("fetch", "post", false, true), {"tenants": ["acme", "globex"]})

test_approvers_decide_only_their_requesters_tenant if {
	avery := person("avery", ["approver"])
	acme_request := {"context": {"approval": {"granted": false, "id": "apr-1", "requester": "alice", "requester_tenant": "acme"}}}
	globex_request := {"context": {"approval": {"granted": false, "id": "apr-1", "requester": "gus", "requester_tenant": "globex"}}}
	ids(deciding(avery, "approve", shared_write, acme_request)) == ["approvers-approve"]
	ids(deciding(avery, "approve", shared_write, globex_request)) == ["approvers-same-tenant"]
}
