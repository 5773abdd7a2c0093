"""Shared test configuration: deterministic hypothesis, float64 where identities are checked."""

import pytest
import torch
from hypothesis import settings

settings.register_profile("probdiff-ci", derandomize=True, deadline=None, max_examples=40, print_blob=True)
settings.load_profile("probdiff-ci")


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
