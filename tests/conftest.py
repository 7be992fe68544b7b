import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).parent))

import gc

import pytest


@pytest.fixture(autouse=True)
def _release_models():
    """Models built by one test are released before the next: without this a full run
    keeps every network (VGG, EfficientNet-B7, ...) alive and runs out of memory."""
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()
