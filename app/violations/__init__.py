"""Violation records: the shared case file."""
