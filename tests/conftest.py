"""Shared fixtures: a small MURA-shaped tree built by hand, a small phantom, and the smoke report (started in the
background as soon as the tests are collected, so that it runs beside the unit tests)."""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils.data import phantom

# (split, part, patient, study number, label, views)
SPEC = [
    ("train", "ELBOW", 1, 1, 1, 2),
    ("train", "ELBOW", 2, 1, 0, 1),
    ("train", "HAND", 3, 1, 0, 3),
    ("train", "HAND", 3, 2, 1, 1),
    ("train", "WRIST", 4, 1, 1, 2),
    ("train", "WRIST", 5, 1, 0, 2),
    ("train", "SHOULDER", 6, 1, 0, 1),
    ("train", "FINGER", 7, 1, 1, 1),
    ("valid", "ELBOW", 8, 1, 0, 2),
    ("valid", "HAND", 9, 1, 1, 1),
]


def study_rel(split, part, patient, study, label):
    return f"MURA-v1.1/{split}/XR_{part}/patient{patient:05d}/study{study}_{'positive' if label else 'negative'}"


def make_mura_tree(parent: Path, spec=SPEC, csv: bool = True, seed: int = 0) -> Path:
    """Write a small tree in MURA-v1.1's layout (with its four CSVs) under `parent`; returns the MURA-v1.1 folder."""
    rng = np.random.default_rng(seed)
    rows = {"train": [], "valid": []}
    studies = {"train": [], "valid": []}
    for split, part, pat, st, lab, views in spec:
        rel = study_rel(split, part, pat, st, lab)
        d = parent / rel
        d.mkdir(parents=True, exist_ok=True)
        studies[split].append((rel + "/", lab))
        for v in range(1, views + 1):
            h, w = rng.integers(40, 90, 2)
            Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(d / f"image{v}.png")
            rows[split].append(f"{rel}/image{v}.png")
    if csv:
        for split in rows:
            (parent / "MURA-v1.1" / f"{split}_image_paths.csv").write_text("".join(r + "\n" for r in rows[split]))
            (parent / "MURA-v1.1" / f"{split}_labeled_studies.csv").write_text(
                "".join(f"{s},{lab}\n" for s, lab in studies[split]))
    return parent / "MURA-v1.1"


@pytest.fixture
def mura_tree(tmp_path) -> Path:
    return make_mura_tree(tmp_path / "dl")


@pytest.fixture(scope="session")
def small_phantom(tmp_path_factory) -> Path:
    """A small phantom (12 train + 5 valid patients, 192 px), generated once per test session."""
    out = tmp_path_factory.mktemp("phantom")
    return phantom.generate(out, train_patients=12, valid_patients=5, seed=3, max_side=192, workers=1,
                            progress=False)


@pytest.fixture(scope="session")
def small_cache(small_phantom, tmp_path_factory):
    """The small phantom's cache at 32 px, with a validation split."""
    from utils import data
    from utils.data import sources

    idx = sources.carve_validation(sources.load_index(small_phantom), 0.25, seed=0)
    return data.build_cache(idx, 32, tmp_path_factory.mktemp("cache"), workers=1, progress=False)


@pytest.fixture(scope="session")
def smoke_tree(tmp_path_factory) -> Path:
    """The smoke profile's plan (64 + 16 patients, its seed) rendered at 96 px: every class has at least
    data.MIN_TRAIN_IMAGES training images after the profile's validation carve. Generated once per session."""
    from utils import config

    p = config.get_profile("smoke")
    return phantom.generate(tmp_path_factory.mktemp("smoke_phantom"), p.phantom.train_patients,
                            p.phantom.valid_patients, p.phantom.seed, max_side=96, workers=1, progress=False)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: on a busy 2-core machine, intra-op threads only wait for each other (a test took 32 s with 2
    threads and 0.7 s with one). Modules that want it say `pytestmark = pytest.mark.usefixtures("one_thread")`;
    restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def net():
    """A small untrained 4-class network with random batch-norm statistics (which make its maps less trivial)."""
    import torch
    from torch import nn

    from utils.models.networks import build_model

    torch.manual_seed(0)
    m = build_model("small", 4).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return m


# --------------------------------------------------------------------------- the smoke report, in the background

SMOKE_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The smoke report runs with one intra-op thread: it runs beside the unit tests on a 2-core machine, where threads
of two processes only wait for each other. Every smoke report of a session runs so (the reproducibility test
compares two runs, and torch's CPU results may depend on the number of threads)."""


def start_smoke_report(out: Path) -> subprocess.Popen:
    """`python -m utils.report --profile smoke` into `out`, started and not awaited (output in out/report-log.txt)."""
    from utils.config import ROOT

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "report-log.txt", "w") as log:
        return subprocess.Popen([sys.executable, "-m", "utils.report", "--profile", "smoke", "--out-root", str(out)],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **SMOKE_ENV},
                                start_new_session=True,  # its own process group: stopped with its kernels
                                preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the report's process, before it starts (Linux): SIGTERM when pytest dies, even by SIGKILL, when no
    session hook or atexit handler runs; its kernels then exit as their parent is gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_smoke_report(proc: subprocess.Popen) -> None:
    """Stop a smoke report still running, with the notebook kernels it started (its process group)."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def finish_smoke_report(proc: subprocess.Popen, out: Path, timeout: float = 900) -> Path:
    """Wait for a smoke report started by `start_smoke_report`; `out` if it succeeded, else the test fails with the
    end of its log."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_smoke_report(proc)
        rc = "stopped after the timeout"
    log = (out / "report-log.txt").read_text(errors="replace")
    assert rc == 0, f"the smoke report failed ({rc}):\n{log[-6000:]}"
    return out


_BACKGROUND: dict = {}


def pytest_collection_finish(session):
    """Start the smoke report once the selected tests are known, if any of them needs it (`smoke_run`); not for
    `--collect-only`. It is stopped when the session ends (`pytest_sessionfinish`) or, failing that, when the
    interpreter exits (atexit)."""
    if session.config.option.collectonly:
        return
    if any("smoke_run" in getattr(item, "fixturenames", ()) for item in session.items):
        out = Path(tempfile.mkdtemp(prefix="smoke-report-"))
        proc = start_smoke_report(out)
        _BACKGROUND.update(proc=proc, out=out)
        atexit.register(stop_smoke_report, proc)


def pytest_sessionfinish(session, exitstatus):
    """A run stopped early (-x, Ctrl-C, a failure) leaves no report running; the folder goes with the session."""
    if "proc" in _BACKGROUND:
        stop_smoke_report(_BACKGROUND["proc"])
        shutil.rmtree(_BACKGROUND["out"], ignore_errors=True)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The whole report on the smoke profile, in a temporary folder (what `make test` runs): the one started in the
    background at collection, or, where none was, one run now."""
    if "proc" in _BACKGROUND:
        return finish_smoke_report(_BACKGROUND["proc"], _BACKGROUND["out"])
    out = tmp_path_factory.mktemp("smoke")
    return finish_smoke_report(start_smoke_report(out), out)
