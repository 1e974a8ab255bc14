# METADATA
# title: The workspace filesystem
# description: |
#   Paths arrive canonical (docs/policy-arguments.md §2): absolute paths have no `.`, `..`,
#   `//` or trailing `/`, file:// URIs are plain paths, relative paths start with `./` or
#   `../`. A prefix test on "/workspace/" is therefore exact. Rego could check every
#   element of a list; it does not, because Cedar cannot, and both engines must mean the
#   same: only path, source and destination are checked, and every path found anywhere in
#   the arguments must be one of them (see policies/cedar/filesystem.cedar).
package mcp.lib.paths

import data.mcp.lib.args

workspace := "/workspace"

# The arguments that name one path each and are checked one by one.
path_arguments := {"path", "source", "destination"}

# METADATA
# title: The canonical path is the workspace or below it
inside(path) if path == workspace

inside(path) if startswith(path, concat("", [workspace, "/"]))

# METADATA
# title: The path arguments that are given but not a path inside the workspace
outside(arguments) := {name |
	some name in path_arguments
	value := arguments[name]
	not is_object(value)
	not inside(value)
}

# METADATA
# title: The values of the path arguments that are text
checked(arguments) := {value |
	some name in path_arguments
	value := args.text(arguments, name)
}

# METADATA
# title: The canonical paths of a call that are not one of its checked path arguments
unchecked(arguments, paths) := {path |
	some path in paths
	not path in checked(arguments)
}
