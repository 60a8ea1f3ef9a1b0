import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

DATA = Path(__file__).parent / "data"
PARITY = DATA / "parity"
PARITY_LM = DATA / "parity-lm"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return PARITY


@pytest.fixture(scope="session")
def parity_checkpoints() -> Path:
    return PARITY / "checkpoints"


@pytest.fixture(scope="session")
def parity_lm_dir() -> Path:
    return PARITY_LM
