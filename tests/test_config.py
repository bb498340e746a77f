from __future__ import annotations

import pytest
import torch

from utils import config


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown profile 'laptop'; known profiles: smoke, cpu, gpu"):
        config.get_profile("laptop")


def test_overrides_and_unknown_settings():
    p = config.get_profile("cpu", epochs=3)
    assert p.epochs == 3 and config.get_profile("cpu").epochs != 3
    with pytest.raises(ValueError, match="unknown profile setting.*epoch"):
        config.get_profile("cpu", epoch=3)


def test_paths_hang_off_the_output_root(tmp_path):
    paths = config.get_paths(tmp_path).make()
    assert paths.artifacts == tmp_path / "artifacts" and paths.results == tmp_path / "report" / "results"
    assert paths.phantom_root(config.get_profile("smoke")) == tmp_path / "data" / "phantom-smoke"
    assert config.get_paths("").out_root == config.ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_asked_for_and_absent_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("XRAY_DEVICE", raising=False)
    assert config.get_device() == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available.*device='cpu'"):
        config.get_device("cuda")
    monkeypatch.setenv("XRAY_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        config.get_device()


def test_device_can_be_forced_to_cpu():
    assert config.get_device("cpu") == torch.device("cpu")


def test_cuda_asked_for_and_absent_is_device_unavailable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("XRAY_DEVICE", "cuda:1")
    with pytest.raises(config.DeviceUnavailable, match=r"device 'cuda:1' was asked for but CUDA is not available"):
        config.get_device()
    assert issubclass(config.DeviceUnavailable, RuntimeError)
    assert config.get_device("cpu") == torch.device("cpu")  # an explicit choice overrides the variable

