# METADATA
# title: Tool arguments, read the way the Cedar adapter reads them
# description: |
#   Policies see the broker's normalised argument summary (docs/policy-arguments.md) in
#   input.context.arguments. Cedar sees each top-level argument as one entity tag
#   (broker/policy/cedar.py): objects are flattened into dotted tags, so an object-valued
#   argument has no tag of its own; a fraction is a decimal with four places. These helpers
#   read arguments the same way, so both engines decide alike.
package mcp.lib.args

# METADATA
# title: Cedar has a tag for the argument
# description: The argument is present and not an object (objects become dotted tags).
tagged(arguments, name) if {
	value := arguments[name]
	not is_object(value)
}

# METADATA
# title: The argument's text
# description: Defined when the argument is a string (Cedar `getTag(name) has text`).
text(arguments, name) := value if {
	value := arguments[name]
	is_string(value)
}

# METADATA
# title: The argument as a number, rounded like Cedar's decimal
# description: |
#   Defined when the argument is a number; fractions are rounded to four decimal places,
#   as the Cedar adapter does when it makes a `decimal` of them.
number(arguments, name) := round4(value) if {
	value := arguments[name]
	is_number(value)
}

# METADATA
# title: Round to four decimal places
round4(x) := round(x * 10000) / 10000

# METADATA
# title: The argument is given and is not exactly false
# description: Cedar `hasTag(name) && !(getTag(name) has flag && getTag(name).flag == false)`.
not_false(arguments, name) if {
	tagged(arguments, name)
	arguments[name] != false
}
