"""Why members do or do not fit: controlled training runs, one setting changed at a time.

    python -m utils.models.recipe --profile cpu --task abnormality      # writes report/recipe/<profile>-<task>.{json,md}
    python -m utils.models.recipe --profile cpu --task bodypart --variants baseline "no augmentation"

Each variant trains one member (member 0's seed, the profile's data and split) with the profile's recipe and one
setting changed, and records what it fits and what it generalises to, all measured in eval mode, without
augmentation: training accuracy and NLL at the kept checkpoint and at the last epoch, validation accuracy and NLL,
test accuracy, the epoch kept (lowest validation NLL), and the seconds it cost. A member that does not fit its
training set where a variant does is a defect of the recipe, not a finding; the table says which setting is to
blame.

The variants are controlled: `baseline` is the profile as it stands, every other row changes one of capacity,
augmentation, dropout, learning rate, weight decay, epochs and resolution. Their models are written under
`artifacts/recipe/` (never the report's members) and reused by a later call on the same data and settings.
`seconds` is the training time the run measured (on a machine doing nothing else, or not: say which).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from utils import data
from utils.config import ROOT, get_device, get_paths, get_profile
from utils.data import phantom
from utils.models import train
from utils.models.networks import build_model

VARIANTS: dict[str, dict] = {
    "baseline": {},
    "no augmentation": dict(augment="none"),
    "no resampling": dict(augment="lossless"),
    "no dropout": dict(dropout=0.0),
    "lr x0.4": dict(lr_scale=0.4),
    "weight decay /5": dict(wd_scale=0.2),
    "epochs x2.5": dict(epochs_scale=2.5),
    "batch 32": dict(batch_size=32),
    "adam, lr 0.001": dict(optimizer="adam", lr=0.001),
    "large network": dict(arch="large"),
    "96 px": dict(image_size=96),
}
"""Name -> change to the profile's recipe (`lr_scale`, `wd_scale`, `epochs_scale` scale the profile's value; every
other key is a Profile setting). "no resampling" keeps the lossless part of the augmentation (mirroring,
brightness and contrast) and drops rotation, scaling and shifts, whose bilinear resampling blurs structures of a
pixel or two at 64 px (`data.AUGMENTATIONS`)."""


def variant_profile(profile, change: dict):
    """The profile with one variant's change applied."""
    change = dict(change)
    over = {}
    if "lr_scale" in change:
        over["lr"] = profile.lr * change.pop("lr_scale")
    if "wd_scale" in change:
        over["weight_decay"] = profile.weight_decay * change.pop("wd_scale")
    if "epochs_scale" in change:
        over["epochs"] = int(round(profile.epochs * change.pop("epochs_scale")))
    return profile.replace(**over, **change)


def run_variant(profile, name: str, change: dict, data_root: str = "", out: Path | None = None, device=None,
                parts=None) -> dict:
    """Train one member under the variant and measure it (see the module docstring)."""
    p = variant_profile(profile, change)
    device = device or get_device()
    paths = get_paths(out or ROOT, p.task, parts)
    _, _, cache = data.prepare(p, data_root, paths, progress=False, parts=parts)
    tr, va, _, te = train.datasets(p, cache, parts)
    folder = paths.artifacts / "recipe" / train.run_name(p, parts) / name.replace(" ", "_").replace("/", "_")
    seed = train.member_seed(p, 0)
    meta = train.expected_meta(p, 0, tr, va)
    try:  # a variant trained before on the same data and settings is reused
        final = torch.load(folder / "best.pt", map_location="cpu", weights_only=True)["meta"]
        train.check_meta(final, meta, folder / "best.pt")
    except (FileNotFoundError, train.CheckpointMismatch):
        for f in ("best.pt", "last.pt"):
            (folder / f).unlink(missing_ok=True)
        torch.manual_seed(seed)
        model = build_model(p.arch, len(tr.classes), p.dropout)
        final = train.fit(model, tr, va, p, seed, folder, meta, device, progress=False)
    seconds = final["train_seconds"]
    model, _ = train.load_checkpoint(folder / "best.pt", device=device)
    h = json.loads((folder / "history.json").read_text())
    kept = h[final["best_epoch"] - 1]
    ev = {s: train.evaluate(model, ds, device) for s, ds in (("train", tr), ("test", te))}
    return dict(variant=name, change=json.dumps(change) if change else "", epochs=p.epochs,
                best_epoch=final["best_epoch"], train_acc=ev["train"]["acc"], train_nll=ev["train"]["nll"],
                train_acc_last=h[-1]["train_eval_acc"], val_acc=kept["val_acc"], val_nll=kept["val_nll"],
                test_acc=ev["test"]["acc"], test_nll=ev["test"]["nll"], seconds=round(seconds, 1),
                curve=[dict(epoch=e["epoch"], train_eval_acc=e["train_eval_acc"], val_acc=e["val_acc"],
                            train_eval_nll=e["train_eval_nll"], val_nll=e["val_nll"]) for e in h])


def table(rows: list[dict]):
    cols = ["variant", "epochs", "best_epoch", "train_acc", "train_acc_last", "train_nll", "val_acc", "val_nll",
            "test_acc", "test_nll", "seconds"]
    df = pd.DataFrame(rows)[cols]
    for c in ("train_acc", "train_acc_last", "val_acc", "test_acc"):
        df[c] = (100 * df[c]).round(1)
    for c in ("train_nll", "val_nll", "test_nll"):
        df[c] = df[c].round(3)
    return df


def markdown(df) -> str:
    """A pipe table (pandas' to_markdown needs tabulate, which this project does not install)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m utils.models.recipe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--task", default="abnormality")
    ap.add_argument("--data", default="")
    ap.add_argument("--parts", default="")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"of: {', '.join(VARIANTS)}")
    a = ap.parse_args(argv)
    unknown = sorted(set(a.variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    profile = get_profile(a.profile, task=a.task)
    parts = a.parts or None
    out = ROOT / "report" / "recipe"
    out.mkdir(parents=True, exist_ok=True)
    f = out / (f"{profile.name}-{profile.task}" + (f"-{parts}" if parts else "") + ".json")
    for name in a.variants:
        r = run_variant(profile, name, VARIANTS[name], a.data, parts=parts)
        print(f"{name:18s} train {100 * r['train_acc']:5.1f} % (last epoch {100 * r['train_acc_last']:5.1f}), val "
              f"{100 * r['val_acc']:5.1f} %, test {100 * r['test_acc']:5.1f} %, kept epoch {r['best_epoch']}/"
              f"{r['epochs']}, {r['seconds']:.0f} s", flush=True)
        rows = save(f, profile, r, generator=generator_of(a.data))
    print(table(rows).to_string(index=False))


def generator_of(data_root: str) -> str | None:
    """The phantom generator a run on `data_root` reads ("": the profile's phantom), None for real data."""
    return None if data_root else phantom.GENERATOR_VERSION


def previous_rows(f: Path, generator: str | None) -> list[dict]:
    """The rows already in the results file `f` (controlled runs, the learnability ladder) that a run on
    `generator` may join: none where the file ran on another generator or does not say which, so a table never
    mixes generators."""
    doc = json.loads(f.read_text()) if f.is_file() else {}
    return doc.get("rows", []) if doc.get("generator_version") == generator else []


def save(f: Path, profile, row: dict, generator: str | None = None) -> list[dict]:
    """Add (or replace) one variant's row in the JSON file `f` and rewrite its Markdown table beside it; the rows.
    `generator`: the phantom generator the rows ran on (None: real data); a file whose rows ran on another
    generator (or on data of unknown origin) is started afresh, so a table never mixes generators."""
    old = previous_rows(f, generator)
    order = list(VARIANTS)
    rows = sorted([r for r in old if r["variant"] != row["variant"]] + [row],
                  key=lambda r: order.index(r["variant"]) if r["variant"] in order else len(order))
    f.write_text(json.dumps(dict(profile=profile.name, task=profile.task, generator_version=generator, rows=rows),
                            indent=1))
    f.with_suffix(".md").write_text(markdown(table(rows)))
    return rows


if __name__ == "__main__":
    main()
