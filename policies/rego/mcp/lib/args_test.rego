package mcp.lib.args_test

import data.mcp.lib.args

test_tagged_scalars_lists_and_null if {
	args.tagged({"a": "x"}, "a")
	args.tagged({"a": 1}, "a")
	args.tagged({"a": [1]}, "a")
	args.tagged({"a": null}, "a")
	args.tagged({"a": false}, "a")
}

test_objects_and_missing_arguments_have_no_tag if {
	not args.tagged({"a": {"b": 1}}, "a")
	not args.tagged({}, "a")
}

test_text_only_for_strings if {
	args.text({"a": "x"}, "a") == "x"
	not args.text({"a": 1}, "a")
	not args.text({"a": ["x"]}, "a")
	not args.text({}, "a")
}

test_number_is_rounded_like_a_cedar_decimal if {
	args.number({"n": 12}, "n") == 12
	args.number({"n": 120.5}, "n") == 120.5
	args.number({"n": 500.00004}, "n") == 500
	args.number({"n": 500.00006}, "n") == 500.0001
	args.number({"n": 0.00001}, "n") == 0
	not args.number({"n": "12"}, "n")
	not args.number({"n": true}, "n")
}

test_not_false if {
	args.not_false({"f": true}, "f")
	args.not_false({"f": "false"}, "f")
	args.not_false({"f": null}, "f")
	args.not_false({"f": 0}, "f")
	not args.not_false({"f": false}, "f")
	not args.not_false({}, "f")
	not args.not_false({"f": {"x": true}}, "f")
}
