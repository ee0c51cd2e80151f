"""Shared by unit and integration tests."""

from tests.cluster import admin, cluster

# one session cluster for every folder (a fixture defined in several conftest files would start
# one cluster per folder); nothing starts unless a test asks for it
__all__ = ["admin", "cluster"]
