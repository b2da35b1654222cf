"""The agency roster: who takes part, and which workflow roles each may play."""
