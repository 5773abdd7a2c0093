"""Shared test configuration: deterministic hypothesis, float64 where identities are checked."""

import pytest
import torch
import probdiff.testing

# the deterministic profile (derandomize=True, deadline=None) lives in the public toolkit
probdiff.testing.register_profile()

# The tests work on small tensors; one intra-op thread avoids oversubscribing the CI's two cores (with
# several pytest processes on a loaded machine, two threads per process made small ops ~1000x slower).
torch.set_num_threads(1)


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
