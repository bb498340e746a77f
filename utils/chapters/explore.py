"""Data exploration (notebook 00): counts, trivial cues, a CNN probe, sample grids with masks."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from utils import data
from utils.chapters.plots import overlay
from utils.data.phantom.anatomy import MURA_STUDIES
from utils.models.networks import build_model

CUES = {
    "image size and aspect": ["height", "width", "aspect"],
    "intensity (mean, std)": ["mean", "std"],
    "brightest spot (marker, collimation)": ["bright_x", "bright_y"],
}
CUES["all trivial cues"] = [c for cols in CUES.values() for c in cols]


def counts(index: pd.DataFrame) -> pd.DataFrame:
    """Images per body part and subset, split by label (normal / abnormal), with totals."""
    t = index.assign(label=index.label.map({0: "normal", 1: "abnormal"}))
    tab = t.pivot_table(index="body_part", columns=["subset", "label"], values="path", aggfunc="count",
                        fill_value=0)
    tab = tab.reindex(columns=[s for s in data.SUBSETS if s in tab.columns.levels[0]], level=0)
    tab.loc["total"] = tab.sum()
    return tab


def units(index: pd.DataFrame) -> pd.DataFrame:
    """Patients, studies and images per subset, and the abnormal share of studies."""
    g = index.groupby("subset")
    out = pd.DataFrame({"patients": g.patient.nunique(), "studies": g.study_id.nunique(), "images": g.size(),
                        "abnormal studies %": g.apply(lambda d: 100 * d.groupby("study_id").label.first().mean(),
                                                      include_groups=False).round(1)})
    return out.reindex([s for s in data.SUBSETS if s in out.index])


def trivial_cues(index: pd.DataFrame, seed: int = 0, task: str = "bodypart", parts=None) -> pd.DataFrame:
    """Test accuracy of gradient-boosted trees that see only trivial cues, per cue group.

    Trained on the train subset, scored on the test subset, for the task's classes (`data.task_targets`: the
    body part, or normal/abnormal, on `parts`); the majority class is the floor.
    """
    df, _ = data.task_targets(index, task, parts)
    df = df.assign(aspect=df.height / df.width)
    tr, te = df[df.subset == "train"], df[df.subset == "test"]
    rows = [dict(cues="majority class", features="-",
                 accuracy=float((te.target == tr.target.mode()[0]).mean()), macro_f1=np.nan)]
    for name, cols in CUES.items():
        clf = HistGradientBoostingClassifier(random_state=seed).fit(tr[cols], tr.target)
        pred = clf.predict(te[cols])
        rows.append(dict(cues=name, features=", ".join(cols), accuracy=accuracy_score(te.target, pred),
                         macro_f1=f1_score(te.target, pred, average="macro")))
    return pd.DataFrame(rows)


def cnn_probe(cache: data.ImageCache, epochs: int = 6, seed: int = 0, batch_size: int = 64, lr: float = 3e-3,
              device: str | torch.device = "cpu", task: str = "bodypart", parts=None) -> dict:
    """Train the small CNN briefly on the train subset; test accuracy and macro-F1 on the task.

    This is a probe of the data (can a CNN see the class where trivial cues cannot?), a few
    epochs with a one-cycle schedule; notebook 01 trains the study's model properly.
    """
    torch.manual_seed(seed)
    tr = data.CachedImages(cache, "train", task=task, parts=parts)
    te = data.CachedImages(cache, "test", task=task, parts=parts)
    model = build_model("small", len(tr.classes)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=1e-4)
    loader = data.make_loader(tr, batch_size, shuffle=True, seed=seed)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(loader))
    augment, gen = data.BatchAugment(), torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(augment(x.to(device), gen)), y.to(device)).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x.to(device)).argmax(1).cpu() for x, _ in data.make_loader(te, 256)]).numpy()
    return dict(cues="CNN probe (pixels)", features=f"{cache.size} px image, {epochs} epochs",
                accuracy=float((pred == te.targets).mean()),
                macro_f1=float(f1_score(te.targets, pred, average="macro")))


def intensity_histograms(cache: data.ImageCache, bins: int = 64) -> pd.DataFrame:
    """Normalised histogram of cached pixel values per body part (letterbox padding excluded)."""
    imgs = cache.images
    out = {}
    for part, grp in cache.index.groupby("body_part"):
        h = np.zeros(256, np.int64)
        for r in np.array_split(grp.row.to_numpy(), max(1, len(grp) // 256)):
            block = imgs[np.sort(r)]
            h += np.bincount(block[block > 0].ravel(), minlength=256)
        h = h.reshape(bins, -1).sum(1)
        out[part] = h / h.sum()
    return pd.DataFrame(out, index=np.arange(bins) * (256 // bins))


def sample_rows(index: pd.DataFrame, per_cell: int = 1, seed: int = 0) -> pd.DataFrame:
    """`per_cell` test images per (body part, label), deterministic under the seed."""
    te = index[index.subset == "test"].sample(frac=1.0, random_state=seed)
    return te.groupby(["body_part", "label"]).head(per_cell).sort_values(["body_part", "label"])


def lesion_kinds(index: pd.DataFrame) -> pd.DataFrame:
    """For phantom trees: share of images per body part whose lesion mask holds each finding of
    `data.LESION_BITS` (a fracture, hardware, a cast, degenerative change)."""
    rows = []
    for _, r in index.iterrows():
        m = data.read_masks(r.path)
        if m is None:
            return pd.DataFrame()
        les = m[1]
        rows.append(dict(body_part=r.body_part, label=r.label,
                         **{kind: bool((les & bit).any()) for kind, bit in data.LESION_BITS.items()}))
    df = pd.DataFrame(rows)
    return (df.groupby(["body_part", "label"])[list(data.LESION_BITS)].mean() * 100).round(1)


def plot_samples(rows: pd.DataFrame, per_row: int = 4):
    """Grid of radiographs (phantom masks outlined: bones green, fracture red, hardware yellow, cast blue)."""
    parts = list(dict.fromkeys(rows.body_part))
    fig, axes = plt.subplots(len(parts), per_row, figsize=(2.3 * per_row, 2.4 * len(parts)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, part in enumerate(parts):
        for j, (_, r) in enumerate(rows[rows.body_part == part].head(per_row).iterrows()):
            img = data.read_image(r.path)
            axes[i, j].imshow(overlay(img, data.read_masks(r.path)))
            axes[i, j].set_title(f"{part.lower()} · {'abnormal' if r.label else 'normal'}", fontsize=8)
    fig.tight_layout()
    return fig


def plot_sizes(index: pd.DataFrame):
    """Histograms of the long side and the aspect ratio per body part (figure 00-1)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for part, g in index.groupby("body_part"):
        axes[0].hist(g[["height", "width"]].max(axis=1), bins=30, histtype="step", label=part.lower())
        axes[1].hist(g.height / g.width, bins=30, histtype="step", label=part.lower())
    axes[0].set(xlabel="long side (px)", ylabel="images", yscale="log", title="Image size per body part")
    axes[1].set(xlabel="aspect ratio (height / width)", ylabel="images", title="Aspect ratio per body part")
    axes[1].legend(fontsize=8, ncol=2)
    return fig


def plot_intensity(hist: pd.DataFrame):
    """The intensity histograms of `intensity_histograms`, one line per body part (figure 00-2)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for part in hist.columns:
        ax.plot(hist.index, hist[part], label=part.lower())
    ax.set(xlabel="pixel value (0-255, letterboxed, padding excluded)", ylabel="share of pixels", yscale="log",
           title="Intensity histogram per body part")
    ax.legend(fontsize=8, ncol=2)
    return fig


def cue_table(index: pd.DataFrame, cache: data.ImageCache, probe_epochs: int, seed: int = 0, device="cpu",
              task: str = "bodypart", parts=None) -> pd.DataFrame:
    """The trivial cues' test accuracy with the CNN probe's as the last row, for the task on `parts`."""
    cues = trivial_cues(index, seed=seed, task=task, parts=parts)
    probe = cnn_probe(cache, epochs=probe_epochs, seed=seed, device=device, task=task, parts=parts)
    return pd.concat([cues, pd.DataFrame([probe])], ignore_index=True)


def plot_cues(table: pd.DataFrame, task: str = "bodypart"):
    """Bars of the test accuracy of each cue group and of the CNN probe (figure 00-5)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(table.cues, 100 * table.accuracy, color=["0.6"] * (len(table) - 1) + ["tab:blue"])
    ax.invert_yaxis()
    ax.set(xlabel=f"test accuracy, {'body part' if task == 'bodypart' else 'normal / abnormal'} (%)", xlim=(0, 100),
           title="Trivial cues against a CNN probe")
    return fig


def mura_comparison(index: pd.DataFrame) -> pd.DataFrame:
    """Per body part, the share of studies and of abnormal studies here beside MURA v1.1's train split
    (Rajpurkar et al. 2018, table 1: `phantom.MURA_STUDIES`), over every split of `index`."""
    studies = index.groupby("study_id").agg(body_part=("body_part", "first"), label=("label", "first"))
    here = studies.groupby("body_part").agg(studies=("label", "size"), abnormal=("label", "mean"))
    mura = pd.DataFrame(MURA_STUDIES, index=["normal", "abnormal"]).T
    out = pd.DataFrame({"studies here": here.studies,
                        "share here %": 100 * here.studies / here.studies.sum(),
                        "share in MURA %": 100 * mura.sum(1) / mura.values.sum(),
                        "abnormal here %": 100 * here.abnormal,
                        "abnormal in MURA %": 100 * mura.abnormal / mura.sum(1)})
    return out.reindex(here.index).round(1)


# --------------------------------------------------------------------------- captions and Reading, per task


MURA_ABNORMAL_SHARE = sum(v[1] for v in MURA_STUDIES.values()) / sum(sum(v) for v in MURA_STUDIES.values())


def task_words(task: str) -> str:
    """The task in words, for captions."""
    return "body-part task (7 classes)" if task == "bodypart" else "normal / abnormal task"


def cue_caption(task: str) -> str:
    """Figure 00-4's caption for the run's task."""
    return (f"**Figure 00-4.** Test accuracy on the {task_words(task)} from trivial cues alone (grey) and from a "
            "small CNN probe trained on the pixels (blue); the majority class is the floor. The probe is a quick "
            "check of the data, not the study's model; notebook 01 trains that.")


def reading(index: pd.DataFrame, table: pd.DataFrame, task: str) -> str:
    """Notebook 00's Reading from its numbers: the splits, the trivial cues and the probe against the majority
    class, and what the masks are, worded for the task."""
    acc = table.set_index("cues").accuracy
    floor, probe = float(acc["majority class"]), float(acc["CNN probe (pixels)"])
    cues = acc.drop(["majority class", "CNN probe (pixels)"])
    best = cues.idxmax()
    studies = index.drop_duplicates("study_id")
    abnormal = float(studies.label.mean())
    share = studies.body_part.value_counts(normalize=True)
    lines = ["## Reading", "",
             f"- The splits are patient-disjoint. Studies per part: {share.index[0].lower()} "
             f"{share.iloc[0]:.0%} to {share.index[-1].lower()} {share.iloc[-1]:.0%}; {abnormal:.0%} of studies "
             f"are abnormal (MURA v1.1: {MURA_ABNORMAL_SHARE:.1%}, Table 00-0's source)."]
    what = "the body part" if task == "bodypart" else "the abnormal label"
    lines.append(f"- Trivial cues predict {what} at {cues.max():.1%} test accuracy at best ({best}), against "
                 f"{floor:.1%} for always guessing the majority class; the CNN probe, after a few epochs on the "
                 f"pixels, reaches {probe:.1%}.")
    if probe - floor >= 0.10:
        lines.append(f"  The pixels carry far more of {what} than the cues do: the class is in the image content.")
    else:
        lines.append(f"  Neither the cues nor the probe is clearly above the majority class "
                     f"({probe - floor:+.1%} for the probe, one run, no interval): a short probe at this image size "
                     f"does not find {what} in these images; notebook 01 trains the study's model for longer.")
    lines.append("- On the phantom every abnormal image comes with masks of what makes it abnormal (fracture, "
                 "hardware, cast, degenerative change), which later notebooks use to check whether explanations "
                 "point at the right place.")
    return "\n".join(lines)
