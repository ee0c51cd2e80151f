"""The chaos suite uses the integration tests' session cluster."""

from tests.integration.conftest import _client_environment, admin, cluster

__all__ = ["_client_environment", "admin", "cluster"]
