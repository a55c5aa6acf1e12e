"""Integration tests whose subject is the registry: the client, gc, verify, attestations,
publish."""
