"""The end-to-end tests use the integration tests' broker and registry (see that conftest)."""

from tests.integration.conftest import _client_environment, cluster

__all__ = ["_client_environment", "cluster"]
