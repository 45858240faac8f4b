from __future__ import annotations

import pytest
import torch

from model.stm import STM
from model.weights import parity_state_dict

torch.set_flush_denormal(True)


@pytest.fixture(scope="session")
def parity_weights(tmp_path_factory) -> Path:  # noqa: F821
    """A checkpoint file with the parity weights (built by our own code from the documented rule)."""
    path = tmp_path_factory.mktemp("weights") / "parity.pth"
    torch.save(parity_state_dict(STM()), path)
    return path


@pytest.fixture(scope="session")
def parity_model() -> STM:
    """The published computation with the parity weights."""
    model = STM(memory_read="naive", share_skips=False)
    model.load_state_dict(parity_state_dict(model))
    return model.eval()
