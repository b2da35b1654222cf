"""Authentication: the service signing key, JWT access tokens and the request principal."""
