"""The notebook runner: the smoke profile over the notebooks that exist, failures, --only."""
from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest

from utils import report, site
from utils.config import ROOT

from .conftest import finish_smoke_report, start_smoke_report

NOTEBOOKS = report.find_notebooks()  # every notebook, whatever its task
BODYPART = report.find_notebooks(task="bodypart")  # what a body-part report runs


def test_there_are_notebooks_and_they_are_stored_without_outputs():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("00_")
    for nb_path in NOTEBOOKS:
        raw = json.loads(nb_path.read_text())
        assert all("id" in c for c in raw["cells"]), f"{nb_path.name}: a cell without an id (nbformat 4.5 needs them)"
        nb = nbformat.read(nb_path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.outputs for c in code), f"{nb_path.name} has outputs: strip them"
        params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1, f"{nb_path.name} needs one cell tagged `parameters`"
        for name in ("profile", "data_root", "out_root", "task", "parts"):
            assert f"{name} =" in params[0].source


def _smoke_report(out):
    """A smoke report run now, as the background one is run (`conftest.start_smoke_report`: one thread)."""
    return finish_smoke_report(start_smoke_report(out), out)


def test_smoke_profile_runs_every_notebook(smoke_run):
    tmp_path = smoke_run
    log = json.loads((tmp_path / "report" / "run_log.json").read_text())
    assert log["profile"] == "smoke" and log["data_source"] == "phantom"
    assert log["task"] == "bodypart" and log["parts"] == "all"
    assert [e["notebook"] for e in log["notebooks"]] == [nb.name for nb in BODYPART]
    assert all(e["status"] == "ok" and e["wall_s"] > 0 for e in log["notebooks"])
    for nb in BODYPART:
        assert (tmp_path / "report" / nb.name).is_file() and (tmp_path / "report" / nb.with_suffix(".html").name).is_file()
        html = (tmp_path / "report" / nb.with_suffix(".html").name).read_text()
        assert "papermill overrides these" not in html, f"{nb.name}: the default parameters shown beside papermill's"
        assert "PosixPath" not in html, f"{nb.name}: a cell shows a path object"
    results = json.loads((tmp_path / "report" / "results" / "data.json").read_text())
    assert results["source"] == "phantom" and results["images"] > 0
    assert any((tmp_path / "figures").glob("00_*.png"))


@pytest.mark.slow  # a second whole smoke report (about 100 s): in `make test-all` and CI, not in `make test`
def test_the_report_reproduces_its_numbers(smoke_run, tmp_path):
    """A second run from scratch gives the same report/results/*.json, byte for byte."""
    again = _smoke_report(tmp_path)
    first = sorted(p.name for p in (smoke_run / "report" / "results").glob("*.json"))
    assert first == sorted(p.name for p in (again / "report" / "results").glob("*.json")) and len(first) >= 6
    for name in first:
        a = json.loads((smoke_run / "report" / "results" / name).read_text())
        b = json.loads((again / "report" / "results" / name).read_text())
        a.pop("root", None), b.pop("root", None)  # where each run's phantom lies
        assert a == b, f"{name} differs between two runs"


def _nb(path, source):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "cpu"\ndata_root = ""\nout_root = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)


def test_a_failing_notebook_stops_the_run_and_keeps_its_copy(tmp_path, smoke_tree):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _nb(nbs / "00_ok.ipynb", "print(profile)")
    _nb(nbs / "01_fail.ipynb", "raise ValueError('boom')")
    _nb(nbs / "02_never.ipynb", "print('never')")
    out = tmp_path / "out"
    with pytest.raises(report.NotebookFailed, match=r"01_fail.ipynb failed in cell \d+: ValueError: boom"):
        report.run("smoke", str(smoke_tree), out_root=str(out), nb_dir=nbs, html=False)
    assert (out / "report" / "01_fail.ipynb").is_file()
    assert not (out / "report" / "02_never.ipynb").exists()
    log = json.loads((out / "report" / "run_log.json").read_text())
    assert [e["status"] for e in log["notebooks"]] == ["ok", "failed"]
    assert log["data_source"] == "mura"
    executed = nbformat.read(out / "report" / "00_ok.ipynb", as_version=4)
    assert "smoke" in executed.cells[-1].outputs[0]["text"]  # the profile reached the notebook

    # --only re-runs one notebook and keeps the other entries of the log
    _nb(nbs / "01_fail.ipynb", "print('fixed')")
    report.run("smoke", str(smoke_tree), only=["01"], out_root=str(out), nb_dir=nbs, html=False)
    log = json.loads((out / "report" / "run_log.json").read_text())
    assert [(e["notebook"], e["status"]) for e in log["notebooks"]] == [("00_ok.ipynb", "ok"),
                                                                       ("01_fail.ipynb", "ok")]


def test_unknown_profile_fails_with_the_known_ones(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "utils.report", "--profile", "huge", "--out-root", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "known profiles: smoke, cpu, gpu" in proc.stderr


def test_only_with_no_match_names_the_notebooks():
    with pytest.raises(SystemExit, match="no notebook matches --only 99"):
        report.find_notebooks(only=["99"])


def test_cuda_asked_for_and_absent_fails_before_the_first_notebook(tmp_path, monkeypatch, capsys):
    import papermill as pm
    import torch

    from utils import config
    from utils.data import sources

    monkeypatch.setenv("XRAY_DEVICE", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(pm, "execute_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    monkeypatch.setattr(sources, "resolve_data", lambda *a, **k: pytest.fail("data prepared before the device check"))
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _nb(nbs / "00_ok.ipynb", "print(profile)")
    with pytest.raises(config.DeviceUnavailable, match=r"device 'cuda' was asked for but CUDA is not available.*"
                                                       r"device='cpu' \(or unset XRAY_DEVICE\)"):
        report.run("smoke", out_root=str(tmp_path / "out"), nb_dir=nbs, html=False)
    with pytest.raises(SystemExit) as e:
        report.main(["--profile", "smoke", "--out-root", str(tmp_path / "out"), "--notebooks", str(nbs)])
    assert e.value.code == 1
    assert "[report] error: device 'cuda' was asked for but CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize("transport", ["curve", "ipc"])
def test_the_kernel_runs_without_the_plain_tcp_warning(tmp_path, smoke_tree, monkeypatch, capfd, transport):
    """ipykernel warns "Kernel is running over TCP without encryption" on plain TCP; the runner starts it with
    CurveZMQ keys (or, without CurveZMQ, on IPC sockets), so the warning is never printed."""
    import zmq

    if transport == "ipc":
        has = zmq.has
        monkeypatch.setattr(zmq, "has", lambda feature: feature != "curve" and has(feature))
        assert report.kernel_config().KernelManager.transport == "ipc"
    else:
        if not zmq.has("curve"):
            pytest.skip("libzmq without CurveZMQ")
        assert report.kernel_config().KernelManager.transport_encryption == "auto"
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _nb(nbs / "00_ok.ipynb", "print(profile * 2)")
    report.run("smoke", str(smoke_tree), out_root=str(tmp_path / "out"), nb_dir=nbs, html=False)
    executed = nbformat.read(tmp_path / "out" / "report" / "00_ok.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"].strip() == "smokesmoke"
    captured = capfd.readouterr()
    assert "without encryption" not in captured.err + captured.out


def test_notebooks_declare_the_tasks_they_run_for():
    abnormality = report.find_notebooks(task="abnormality")
    assert [nb.name for nb in BODYPART] == [nb.name for nb in abnormality if nb.name[:2] != "07"]
    assert [nb.name[:2] for nb in abnormality if nb not in BODYPART] == ["07"]


def test_reports_of_the_two_tasks_go_to_their_own_folders(tmp_path):
    from utils import config

    assert config.get_paths(tmp_path).report == tmp_path / "report"
    p = config.get_paths(tmp_path, "abnormality", "wrist,HAND")
    assert p.report == tmp_path / "report" / "abnormality-HAND+WRIST" and p.results.parent == p.report
    assert p.figures == tmp_path / "figures" / "abnormality-HAND+WRIST" and p.artifacts == tmp_path / "artifacts"
    assert config.get_paths(tmp_path, "abnormality").report == tmp_path / "report" / "abnormality"
    with pytest.raises(ValueError, match=r"unknown body part\(s\) \['KNEE'\]"):
        config.get_paths(tmp_path, "abnormality", "KNEE")
    with pytest.raises(ValueError, match="unknown task 'fracture'"):
        config.get_paths(tmp_path, "fracture")


def test_a_one_part_tree_is_refused_before_the_first_notebook(tmp_path, monkeypatch, capsys):
    import papermill as pm

    from .conftest import make_mura_tree

    spec = [("train", "WRIST", p, 1, p % 2, 3) for p in range(1, 15)] + [("valid", "WRIST", 20, 1, 1, 2)]
    root = make_mura_tree(tmp_path / "dl", spec)
    monkeypatch.setattr(pm, "execute_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    with pytest.raises(SystemExit) as e:
        report.main(["--profile", "smoke", "--data", str(root), "--out-root", str(tmp_path / "out")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "the body-part task needs two or more body parts, but the data hold one body part only: WRIST" in err
    assert "make report TASK=abnormality" in err


@pytest.fixture(scope="module")
def abnormality_run(tmp_path_factory):
    """The abnormality report on two parts, its first notebook and MURA's chapter (07), on the smoke profile."""
    out = tmp_path_factory.mktemp("abnormality")
    proc = subprocess.run([sys.executable, "-m", "utils.report", "--profile", "smoke", "--task", "abnormality",
                           "--parts", "HAND,WRIST", "--only", "00", "07", "--no-html", "--out-root", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.slow  # another report run (about 35 s): in `make test-all` and CI, not in `make test`
def test_the_abnormality_report_runs_and_keeps_apart(abnormality_run):
    rep = abnormality_run / "report" / "abnormality-HAND+WRIST"
    log = json.loads((rep / "run_log.json").read_text())
    assert log["task"] == "abnormality" and log["parts"] == ["HAND", "WRIST"]
    assert [e["notebook"][:2] for e in log["notebooks"]] == ["00", "07"]
    res = json.loads((rep / "results" / "abnormality.json").read_text())
    assert res["task"] == "abnormality" and res["parts"] == ["HAND", "WRIST"]
    whole = [r for r in res["table"] if r["body_part"] == "all" and r["method"] == "deep ensemble"][0]
    assert 0 <= whole["AUROC low"] <= whole["study AUROC"] <= whole["AUROC high"] <= 1
    assert {r["body_part"] for r in res["table"]} == {"all", "HAND", "WRIST"}
    assert len(res["resolution"]) == 2 and res["reference"]
    assert not (abnormality_run / "report" / "run_log.json").exists()  # the body-part report is untouched
    assert any((abnormality_run / "figures" / "abnormality-HAND+WRIST").glob("07_*.png"))


def test_the_html_shows_the_parameters_once_and_the_notebook_keeps_both(tmp_path):
    """papermill keeps the notebook's `parameters` cell (its defaults) and injects the values that ran after it:
    the HTML leaves the defaults out; the executed .ipynb, papermill's record, keeps both."""
    nb = nbformat.v4.new_notebook()
    default = nbformat.v4.new_code_cell('profile = "cpu"  # DEFAULTS-CELL')
    default.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell('# INJECTED-CELL\nprofile = "smoke"')
    injected.metadata["tags"] = ["injected-parameters"]
    hidden = nbformat.v4.new_code_cell("x = 1  # HIDDEN-CELL")
    hidden.metadata["tags"] = ["remove-cell"]
    nb.cells = [default, injected, hidden, nbformat.v4.new_code_cell("print(profile)  # SHOWN-CELL")]
    path = tmp_path / "00_x.ipynb"
    nbformat.write(nb, path)
    before = path.read_text()
    html = site.render_html(path).read_text()
    assert "INJECTED-CELL" in html and "SHOWN-CELL" in html
    assert "DEFAULTS-CELL" not in html and "HIDDEN-CELL" not in html
    assert path.read_text() == before

    nb.cells = [default, nb.cells[-1]]  # not run by papermill: the defaults are what runs, and are shown
    nbformat.write(nb, path)
    assert "DEFAULTS-CELL" in site.render_html(path).read_text()
