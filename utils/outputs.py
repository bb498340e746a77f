"""Where a notebook's outputs go: figures (`savefig`, at `DPI`), results JSON (`write_results`) and timings
(`write_timings`), written so that a rebuild changes a file only when its content changes."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython import get_ipython
from IPython.display import Image as Shown
from IPython.display import display
from PIL import Image

DPI = 110  # figures are sized for the web: a 10-inch-wide figure is 1100 px


def savefig(fig, name: str, figures_dir: str | Path, show: bool = True) -> Path:
    """Save `fig` as figures/<name>.png and show that file in the notebook.

    The PNG is rendered once at DPI, quantised to a 256-colour palette (a fraction of the bytes, no visible
    change for plots) and written; the figure is closed and, in a notebook, the saved file is displayed, so
    the executed report embeds exactly the committed figure, once.
    """

    out = Path(figures_dir) / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, bbox_inches="tight", format="png")
    plt.close(fig)
    Image.open(buf).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(out, optimize=True)
    if show:
        try:
            if get_ipython() is not None:
                display(Shown(filename=str(out)))
        except ImportError:
            pass
    return out


def _clean(o):
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return None if math.isnan(o) else round(float(o), 6)
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, Path):
        return str(o)
    return o


def write_timings(name: str, payload: dict, report_dir: str | Path) -> Path:
    """Write report/timings/<name>.json: wall-clock seconds, kept apart from report/results/, whose numbers
    must be the same on every run."""
    return write_results(name, payload, Path(report_dir) / "timings")


def write_results(name: str, payload: dict, results_dir: str | Path) -> Path:
    """Write report/results/<name>.json: sorted keys, floats rounded to 6 digits (stable across runs)."""
    out = Path(results_dir) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_clean(payload), indent=2, sort_keys=True) + "\n")
    return out
