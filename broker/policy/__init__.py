"""The policy decision point: build the authorization request, ask an engine, get a Decision."""
