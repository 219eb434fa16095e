"""Shared fixtures: hypothesis profiles, real temporary stores."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.register_profile(
    "fuzz", deadline=None, max_examples=int(os.environ.get("EDGE_AGENT_FUZZ_EXAMPLES", "20000"))
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

from tests.broker import mosquitto  # noqa: E402, F401  (the real-broker fixture)
from tests.postgres import postgres, postgres_server  # noqa: E402, F401  (real PostgreSQL)

# The edit loop's fast subset (`bash scripts/test --fast`): every test that needs no real broker,
# database, browser or agent process. The others are marked "slow" here, from what they use.
SLOW_FIXTURES = frozenset({"mosquitto", "postgres", "postgres_server"})
SLOW_FILES = ("test_chaos.py", "test_browser.py", "test_end_to_end.py", "test_bench.py")
SLOW_FOLDERS = ("faults", "liveness")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path
        if (
            SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
            or path.name in SLOW_FILES
            or path.parent.name in SLOW_FOLDERS
        ):
            item.add_marker(pytest.mark.slow)
