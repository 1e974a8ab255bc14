"""Who the caller is: the principal every policy decision is about."""
