"""The system tier: real processes, the installed wheel, Voltus's certification scenarios, and
the long model of holders. Every test here is slow: `make test-fast` leaves the tier out."""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name == "system":
            item.add_marker(pytest.mark.slow)
