"""Shared by unit and integration tests."""
