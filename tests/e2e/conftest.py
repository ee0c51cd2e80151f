"""The end-to-end tests use the session cluster (tests/cluster.py) and the integration tests'
client environment."""

from tests.integration.conftest import _client_environment

__all__ = ["_client_environment"]
