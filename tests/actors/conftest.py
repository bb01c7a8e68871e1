"""One Ray instance per test session, shared by every actor test (starting Ray costs seconds)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import ray


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    if not ray.is_initialized():
        # Fractional-CPU actors on a 2-core machine; no dashboard in tests.
        ray.init(
            num_cpus=int(os.environ.get("KALSHIFLOW_TEST_RAY_CPUS", "4")),
            include_dashboard=False,
            namespace="kalshiflow-test",
            log_to_driver=True,
            configure_logging=False,
        )
    yield
    ray.shutdown()
