"""Shared fixtures. Tests that need the reference data or the converter stack skip with a reason."""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


HAS_CONVERT = _has("tensorflow") and _has("keras")


@pytest.fixture(scope="session")
def data_dir():
    from edgemm.datasets.avdigits import resolve_data_dir
    from edgemm.errors import DataError

    try:
        return resolve_data_dir()
    except DataError as e:
        pytest.skip(f"reference data not available: {e}")


def pytest_collection_modifyitems(config, items):
    skip_convert = pytest.mark.skip(reason="converter extra not installed: pip install 'edgemm[convert]'")
    for item in items:
        if "convert" in item.keywords and not HAS_CONVERT:
            item.add_marker(skip_convert)
