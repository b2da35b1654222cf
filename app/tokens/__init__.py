"""Access tokens: issued by admins (or the CLI), bound to one agency, revocable at once."""
