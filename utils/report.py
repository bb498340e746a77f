"""Execute the numbered notebooks into the report (what `make report` runs).

    python -m utils.report                          # cpu profile, embedded phantom
    python -m utils.report --profile gpu --data /path/to/MURA-v1.1
    python -m utils.report --only 02                # re-run one notebook, reusing artifacts/
    python -m utils.report --task abnormality --parts HAND,WRIST   # MURA's task: report/abnormality-HAND+WRIST/

Each `notebooks/NN_*.ipynb` is executed by papermill on the project's Jupyter
kernel (the `.venv` interpreter, registered by `make setup`) with the
parameters `profile`, `data_root`, `out_root`, `task` and `parts`; the executed copy and an HTML
rendering go to `report/` (the body-part task on every part) or `report/<task>[-<PARTS>]/`, so the
reports of different tasks coexist, and its `run_log.json` records per notebook the wall seconds and
status, with the profile, task, parts, data source, device and git commit. A notebook whose metadata
says `"xray": {"tasks": [...]}` runs only for those tasks (07 only for the abnormality task). Data that
cannot train or score the task (`data.check_task_data`) are refused before the first notebook. A
failing notebook stops the run, naming the notebook and the cell's error; its
executed copy up to the failure is kept for reading. The device (XRAY_DEVICE)
is checked before the first notebook, so CUDA asked for and absent fails at once.

The kernel talks to papermill over CurveZMQ-encrypted TCP (or, where CurveZMQ is
missing, over IPC sockets): ipykernel warns "Kernel is running over TCP without
encryption" for plain TCP, and that is true, so the runner does not use it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import zmq
from ipykernel.kernelspec import install
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import KernelManager
from traitlets.config import Config

from utils import data, site
from utils.config import ROOT, DeviceUnavailable, display_path, get_device, get_paths, get_profile, parse_parts
from utils.data import sources
from utils.site import render_html

KERNEL_NAME = "xray-bayes"
NOTEBOOKS = ROOT / "notebooks"


class NotebookFailed(RuntimeError):
    pass


def notebook_tasks(nb: Path) -> tuple[str, ...] | None:
    """The tasks a notebook declares it runs for (metadata "xray": {"tasks": [...]}), or None for every task."""
    meta = json.loads(Path(nb).read_text()).get("metadata", {}).get("xray", {})
    return tuple(meta["tasks"]) if "tasks" in meta else None


def find_notebooks(nb_dir: Path = NOTEBOOKS, only: list[str] | None = None, task: str | None = None
                   ) -> list[Path]:
    """The numbered notebooks in order (those that run for `task`, if given), or those whose number (or name)
    is in `only`."""
    nbs = sorted(Path(nb_dir).glob("[0-9][0-9]_*.ipynb"))
    if task is not None:
        nbs = [nb for nb in nbs if notebook_tasks(nb) is None or task in notebook_tasks(nb)]
    if only:
        want = [str(o) for o in only]
        picked = [nb for nb in nbs if any(nb.name.startswith(w.zfill(2)) or nb.stem == w for w in want)]
        if not picked:
            raise SystemExit(f"no notebook matches --only {' '.join(want)}; "
                             f"notebooks: {', '.join(nb.name for nb in nbs)}")
        return picked
    return nbs


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """Register this interpreter as the Jupyter kernel `name` (inside its prefix) if it is not yet."""
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
        if Path(spec.argv[0]).exists():
            return name
    except NoSuchKernel:
        pass

    install(kernel_name=name, display_name=f"Python ({name})", prefix=sys.prefix)
    return name


def kernel_config(name: str = KERNEL_NAME):
    """Traitlets config for papermill's kernel manager that keeps the kernel off plain TCP.

    ipykernel logs "Kernel is running over TCP without encryption ..." (ipykernel/kernelapp.py,
    `init_sockets`) whenever its transport is TCP and it has no CurveZMQ key, and names the two cures:
    keys provisioned by the kernel manager, or the IPC transport. jupyter_client (>= 8.10) provisions the
    keys with `KernelManager.transport_encryption = "auto"` for kernelspecs that declare
    `metadata.supported_encryption: ["curve"]` (ipykernel >= 7 writes that) when libzmq has CurveZMQ;
    otherwise, on POSIX, the kernel listens on IPC (Unix) sockets beside its connection file.
    """
    try:
        supported = KernelSpecManager().get_kernel_spec(name).metadata.get("supported_encryption") or []
    except NoSuchKernel:  # papermill says so when it starts the kernel
        supported = []
    supported = [supported] if isinstance(supported, str) else supported
    if ("curve" in [str(x).lower() for x in supported] and zmq.has("curve")
            and "transport_encryption" in KernelManager.class_trait_names()):
        return Config({"KernelManager": {"transport_encryption": "auto"}})
    if os.name == "posix":
        return Config({"KernelManager": {"transport": "ipc"}})
    return Config()


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
"""Cell tags the HTML leaves out (nbconvert's TagRemovePreprocessor): the whole cell, its code, its outputs."""


def run(profile: str = "cpu", data_root: str = "", only: list[str] | None = None, out_root: str = "",
        nb_dir: Path = NOTEBOOKS, kernel: str = KERNEL_NAME, html: bool = True, task: str = "bodypart",
        parts=None) -> dict:
    """Execute the notebooks for `task` on `parts`; returns the run log (also written to the report folder's
    run_log.json)."""
    import papermill as pm


    prof = get_profile(profile, task=task)
    parts = parse_parts(parts)
    device = get_device()  # CUDA asked for (XRAY_DEVICE) and absent fails here, before any notebook
    paths = get_paths(out_root, task, parts).make()
    notebooks = find_notebooks(nb_dir, only, task)
    ensure_kernel(kernel)
    config = kernel_config(kernel)
    t0 = time.time()
    src = sources.resolve_data(prof, data_root, paths)  # generate the phantom once, before any notebook
    index = sources.carve_validation(sources.load_index(src["root"]), prof.val_fraction, prof.seed,
                                     prof.cal_fraction)
    data.check_task_data(index, task, parts)  # degenerate data: refused before hours are spent on it
    log_path = paths.report / "run_log.json"
    log = json.loads(log_path.read_text()) if (only and log_path.exists()) else {}
    entries = {e["notebook"]: e for e in log.get("notebooks", [])}
    log.update(profile=prof.name, task=task, parts=parts or "all", data_source=src["source"],
               data_root=display_path(src["root"]), git_commit=git_commit(), device=str(device),
               started=datetime.now(timezone.utc).isoformat(timespec="seconds"), python=sys.version.split()[0])
    if not only:
        log["data_seconds"] = round(time.time() - t0, 1)
    params = dict(profile=prof.name, data_root=str(data_root or ""), out_root=str(out_root or ""), task=task,
                  parts=",".join(parts or []))
    failure = None
    for nb in notebooks:
        out_nb = paths.report / nb.name
        print(f"[report] {nb.name} ...", flush=True)
        t = time.time()
        entry = dict(notebook=nb.name, status="ok")
        try:
            pm.execute_notebook(str(nb), str(out_nb), parameters=params, kernel_name=kernel, language="python",
                                cwd=str(nb.parent), progress_bar=False, config=config)
        except pm.PapermillExecutionError as e:
            entry.update(status="failed", error=f"cell {e.exec_count}: {e.ename}: {e.evalue}")
            failure = (f"notebook {nb.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                       f"the executed copy up to the failure is {out_nb}")
        entry["wall_s"] = round(time.time() - t, 1)
        if html and out_nb.exists():
            render_html(out_nb)
        entries[nb.name] = entry
        print(f"[report] {nb.name} {entry['status']} in {entry['wall_s']} s", flush=True)
        if failure:
            break
    log["notebooks"] = [entries[k] for k in sorted(entries)]
    log["total_s"] = round(sum(e["wall_s"] for e in log["notebooks"]) + log.get("data_seconds", 0), 1)
    log_path.write_text(json.dumps(log, indent=2) + "\n")
    if failure:
        raise NotebookFailed(failure)
    if html:
        site.write_indexes(paths.out_root)  # report/index.html, report/<variant>/index.html (utils.site)
    return log


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m utils.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu", help="smoke, cpu (default) or gpu")
    ap.add_argument("--data", default="", help="MURA-v1.1 folder; empty: generate the embedded phantom")
    ap.add_argument("--only", nargs="+", help="notebook numbers to (re-)run, e.g. --only 02 04")
    ap.add_argument("--task", default="bodypart", help="bodypart (default; 7 classes) or abnormality (MURA's task)")
    ap.add_argument("--parts", default="", help="restrict to these body parts, e.g. HAND,WRIST (default: all)")
    ap.add_argument("--out-root", default="", help="write data/, artifacts/, report/, figures/ here "
                                                   "(default: the repository)")
    ap.add_argument("--notebooks", default=str(NOTEBOOKS), help=argparse.SUPPRESS)
    ap.add_argument("--no-html", action="store_true", help="skip the HTML renderings")
    a = ap.parse_args(argv)
    try:
        log = run(a.profile, a.data, a.only, a.out_root, Path(a.notebooks), html=not a.no_html, task=a.task,
                  parts=a.parts)
    except (NotebookFailed, ValueError, DeviceUnavailable) as e:
        print(f"[report] error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"[report] done: {len(log['notebooks'])} notebook(s), {log['total_s']} s, profile {log['profile']}, "
          f"task {log['task']}, parts {log['parts']}, data {log['data_source']}, in {display_path(get_paths(a.out_root, a.task, a.parts).report)}")


if __name__ == "__main__":
    main()
