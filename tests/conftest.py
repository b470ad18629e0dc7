"""Test configuration: offline by default, small generated data shared across the session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

from tests.helpers import make_tiny_dataset


@pytest.fixture(scope="session", autouse=True)
def _openvino_cache(tmp_path_factory: pytest.TempPathFactory):
    """Compiled OpenVINO models of the tests are cached in a temporary folder, not the user's cache."""
    os.environ["ANOMALIB_FEWSHOT_CACHE"] = str(tmp_path_factory.mktemp("openvino_cache"))


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory: pytest.TempPathFactory):
    """Root of a tiny MVTec-layout dataset with category ``tiny``."""
    root = tmp_path_factory.mktemp("data")
    make_tiny_dataset(root)
    return root


@pytest.fixture(autouse=True)
def _fast_tier_does_not_train_through_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A test outside the slow tier that fits through anomalib's ``Engine`` fails at once (the fast tier's rule)."""
    if request.node.get_closest_marker("slow") is not None:
        return
    from anomalib.engine import Engine

    def refuse(*args: object, **kwargs: object) -> None:
        del args, kwargs
        pytest.fail("this test fits through anomalib's Engine: mark it @pytest.mark.slow (the fast tier does not)")

    for method in ("fit", "train"):
        monkeypatch.setattr(Engine, method, refuse)
