"""Shared bits of the LM tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The LM tests are many tiny ops; on a shared 2-core machine one thread is far faster
    (and the parity fixtures say 1 thread reproduces every token)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
