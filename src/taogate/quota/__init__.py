"""Quota: the GCRA limit, the per-credential state and the credential pool."""
