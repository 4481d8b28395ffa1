"""Registers the battery's marker when it runs outside the decoderlab checkout (``pytest --pyargs``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: torch.compile checks (~20-36 s per model on a small CPU)")
