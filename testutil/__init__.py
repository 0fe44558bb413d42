"""Test helpers shared across the repository."""
