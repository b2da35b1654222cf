"""The append-only, hash-chained audit log and the auditor's endpoints."""
