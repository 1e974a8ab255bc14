package mcp.lib.paths_test

import data.mcp.lib.paths

test_inside_the_workspace if {
	paths.inside("/workspace")
	paths.inside("/workspace/a")
	paths.inside("/workspace/a/b.txt")
}

test_not_inside_the_workspace if {
	not paths.inside("/workspace2/a")
	not paths.inside("/workspace.bak")
	not paths.inside("/Workspace/a")
	not paths.inside("/")
	not paths.inside("./workspace/a")
	not paths.inside("~/workspace")
}

test_outside_names_the_arguments if {
	paths.outside({"path": "/workspace/a"}) == set()
	paths.outside({"source": "/workspace/a", "destination": "/tmp/a"}) == {"destination"}
	paths.outside({"path": ["/workspace/a"]}) == {"path"}
	paths.outside({"path": null}) == {"path"}
	paths.outside({"path": {"inner": "/etc"}}) == set()
	paths.outside({"content": "/etc/passwd"}) == set()
}

test_checked_takes_the_text_of_the_path_arguments if {
	paths.checked({"path": "/workspace/a", "source": 1, "other": "/x"}) == {"/workspace/a"}
	paths.checked({}) == set()
}

test_unchecked_paths if {
	paths.unchecked({"path": "/workspace/a"}, ["/workspace/a"]) == set()
	paths.unchecked({"paths": ["/workspace/a"]}, ["/workspace/a"]) == {"/workspace/a"}
	paths.unchecked({"path": "/workspace/a", "content": "/etc/x"}, ["/etc/x", "/workspace/a"]) == {"/etc/x"}
	paths.unchecked({}, []) == set()
}
