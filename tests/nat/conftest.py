"""Shared fixtures of the namespace tests: skip cleanly without root/ip/nft (fail in CI, where
.ci/run installs them), sweep stale state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nat.helpers import IN_CI, MISSING
from nat.topology import Topology, sweep_stale


@pytest.fixture(scope="session", autouse=True)
def _sweep_once() -> None:
    """Remove namespaces of our prefix that a killed earlier run left behind."""
    if MISSING is None:
        sweep_stale()


@pytest.fixture
def topo() -> Iterator[Topology]:
    """A fresh topology (just the public namespace); always torn down, also on failure."""
    if MISSING is not None:
        if IN_CI:
            pytest.fail(f"CI must run the NAT tests: {MISSING}")
        pytest.skip(MISSING)
    with Topology() as t:
        yield t
