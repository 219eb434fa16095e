"""Shared fixtures: hypothesis profiles, real temporary stores."""

from __future__ import annotations

import os

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
