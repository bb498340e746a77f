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



# --------------------------------------------------------------------------- every profile difference on Profile

import json  # noqa: E402
import re  # noqa: E402

_PROFILE_NAMES = "|".join(config.PROFILES)
_NAME_BRANCHES = [
    re.compile(r"profile\.name\s*(==|!=|\bnot\s+in\b|\bin\b)"),  # profile.name == "smoke", ... in ("cpu", ...)
    re.compile(r"(==|!=)\s*[\w.\[\]\"']*profile\.name\b"),  # "smoke" == profile.name
    re.compile(rf"[\"']({_PROFILE_NAMES})[\"']\s*(==|!=|\bin\b)"),  # "smoke" == name, "gpu" in names
    re.compile(rf"\{{\s*[\"']({_PROFILE_NAMES})[\"']\s*:"),  # {"smoke": 90, "cpu": 30}: a setting keyed by name
    re.compile(r"(?<!PROFILES)(\.get\(|\[)\s*[\w.]*profile\.name\b"),  # SIZES[profile.name], .get(profile.name)
]


def _code_lines():
    """(where, line) of every line of code in the notebooks (code cells) and in utils/ (but config.py, where
    the profiles are defined by name)."""
    for nb in sorted((config.ROOT / "notebooks").glob("*.ipynb")):
        for k, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] == "code":
                for i, line in enumerate("".join(cell["source"]).splitlines(), 1):
                    yield f"{nb.name} cell {k} line {i}", line
    for py in sorted((config.ROOT / "utils").rglob("*.py")):
        if py.name != "config.py" or py.parent.name != "utils":
            for i, line in enumerate(py.read_text().splitlines(), 1):
                yield f"{py.relative_to(config.ROOT)}:{i}", line


def test_no_notebook_or_module_branches_on_the_profile_name():
    """Every setting that differs between the profiles is a field of `Profile` (issue 22): a notebook or module
    reads `profile.<setting>`, never compares the profile's name or keys a table by it."""
    hits = [f"{where}: {line.strip()}" for where, line in _code_lines()
            if any(p.search(line.split("#")[0]) for p in _NAME_BRANCHES)]
    assert not hits, "branches on the profile's name (make the setting a field of Profile):\n" + "\n".join(hits)


def test_the_grep_finds_a_branch_on_the_profile_name():
    for line in ('n = 20 if run.profile.name == "smoke" else 100', 'step = {"smoke": 90, "cpu": 30}.get(x, 15)',
                 'if "gpu" == profile.name:', "for s in SIZES.get(profile.name, ()):", "if profile.name in SMALL:"):
        assert any(p.search(line) for p in _NAME_BRANCHES), line
    for line in ('f"phantom-{profile.name}"', "base = PROFILES.get(profile.name)", "h = dict(profile=profile.name)"):
        assert not any(p.search(line) for p in _NAME_BRANCHES), line


@pytest.mark.parametrize("field, smoke, cpu, gpu", [
    ("n_boot", 400, 2000, 2000),
    ("cue_probe_epochs", 1, 8, 8),
    ("laplace_head_samples", 20, 100, 100),
    ("deletion_images", 40, 120, 120),
    ("all_weights_samples", 8, 16, 16),
    ("all_weights_images", 40, 256, 256),
    ("scale_sweep_images", 20, 64, 64),
    ("rotation_step", 90, 30, 15),
    ("counterfactual_studies", 6, 30, 30),
    ("resolution_sizes", (32, 48), (64, 96), (128, 224, 320)),
])
def test_the_profiles_hold_the_settings_the_notebooks_used_to_branch_on(field, smoke, cpu, gpu):
    """The values the notebooks and modules chose by the profile's name before they became fields (issue 22):
    moving them changed no report. Change one here only together with the report it changes."""
    assert [getattr(config.PROFILES[n], field) for n in ("smoke", "cpu", "gpu")] == [smoke, cpu, gpu]
