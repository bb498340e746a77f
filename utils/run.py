"""One object for a run: `Run(profile, data_root, out_root)` is every notebook's setup.

It owns the profile, the paths, the device, the data (source, index, cache, datasets), the trained members and
their stored predictions, each computed on first use, so a notebook starts with one line::

    run = Run(profile, data_root, out_root)

and passes `run` (or nothing) instead of a tuple of (profile, cache, paths, device, parts).

The artifacts, and who writes and who invalidates each (everything hangs off `out_root`, by default the
repository; `<run>` is `<profile>/<task>[-<PARTS>]/<arch>`):

=======================================================  ==================================================
path                                                     written by / invalidated by
=======================================================  ==================================================
data/phantom-<profile>/MURA-v1.1/                        `sources.resolve_data` (the phantom, generated once
                                                         from its seed); never invalidated: delete it to
                                                         regenerate
data/phantom-<profile>-unfamiliar/                       `data.prepare_unfamiliar`, likewise
artifacts/cache/<key>/                                   `data.build_cache`; the key hashes the index (paths,
                                                         sizes, times) and the image size, so changed images
                                                         make a new cache
artifacts/models/<run>/memberNN/best.pt, history.json    `train.fit`; a checkpoint whose metadata (data
                                                         fingerprint, settings) disagrees with the run is
                                                         refused (`train.CheckpointMismatch`)
artifacts/models/<run>/memberNN/logits_<split>.npy       `train.member_logits`; deleted by `train.fit` when
                                                         it writes a new best.pt
artifacts/models/<run>/memberNN/features_<split>.npy     `store.member_features`, with a sidecar
                     features_<split>.json               features_<split>.json holding the sha256 of the
                                                         best.pt they came from: recomputed when it changed
artifacts/predictions/<run>/<key>__<split>__mNN[__...].npz `posteriors.Posterior.predict`; the name holds every
                                                         setting that changes the saved numbers (`file_name`:
                                                         samples __sNN, Laplace version __vN); each file holds
                                                         its member's checkpoint sha256 and is recomputed
                                                         when the member was retrained
report[/<variant>]/results/<chapter>.json, timings/      the notebooks, through `Run.write_results` /
                                                         `Run.write_timings`; <variant> is '' for the body-part
                                                         task on every part, else e.g. abnormality-HAND+WRIST
                                                         (`config.report_variant`), so reports coexist
figures[/<variant>]/<NN>_<name>.png                      the notebooks, through `Run.savefig`
=======================================================  ==================================================
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
from IPython.display import Markdown

from utils import config, data, posteriors
from utils.data.sources import source_note
from utils.models import train
from utils.outputs import savefig, write_results, write_timings
from utils.posteriors import store


class Member:
    """A trained member of the run's ensemble: its network (CPU, eval mode), metadata, and cached logits and
    features per split. Satisfies `posteriors.MemberLike`."""

    def __init__(self, run: "Run", index: int):
        self.run, self.index = run, index

    @cached_property
    def _loaded(self):
        r = self.run
        return train.load_member(r.profile, self.index, r.cache, r.paths, "cpu", r.parts)

    @property
    def model(self) -> torch.nn.Module:
        return self._loaded[0].eval()

    @property
    def meta(self) -> dict:
        return self._loaded[1]

    def features(self, subset: str) -> tuple[np.ndarray, np.ndarray]:
        return self._features[subset]

    @cached_property
    def _features(self) -> dict:
        r = self.run
        return store.member_features(r.profile, self.index, r.cache, r.paths, r.device, r.parts)

    def logits(self, subset: str) -> np.ndarray:
        r = self.run
        return train.member_logits(r.profile, self.index, r.cache, subset, r.paths, r.device, r.parts)

    def _dataset(self, subset: str):
        splits = self.run.datasets._asdict()
        if subset not in splits:
            raise ValueError(f"unknown split {subset!r}; known: {', '.join(splits)}")
        return splits[subset]

    def loader(self, subset: str):
        """A DataLoader of the split's (image, label) batches, in order, without augmentation."""
        p = self.run.profile
        return data.make_loader(self._dataset(subset), p.batch_size, num_workers=p.num_workers)

    def images(self, subset: str) -> torch.Tensor:
        """Every image of the split, N x 1 x S x S (as the network takes them)."""
        return torch.cat([x for x, _ in self.loader(subset)])

    @property
    def device(self) -> torch.device:
        return self.run.device

    @cached_property
    def checkpoint(self) -> str:
        """sha256 of the member's best.pt: the weights its saved predictions were computed from."""
        r = self.run
        return store.checkpoint_sha256(train.member_dir(r.paths, r.profile, self.index, r.parts) / "best.pt")

    @property
    def predictions_dir(self):
        return self.run.paths.artifacts / "predictions" / train.run_name(self.run.profile, self.run.parts)

    def history(self):
        return train.history(self.run.profile, self.index, self.run.paths, self.run.parts)


class Run:
    """The profile's run on one data source, for one task: see the module docstring for what it owns."""

    def __init__(self, profile="cpu", data_root: str = "", out_root: str = "", task: str | None = None,
                 parts=None, progress: bool = False, members: int | None = None):
        p = config.get_profile(profile)
        self.profile = p.replace(task=task) if task and task != p.task else p
        if members is not None:  # the ensemble's size (not part of the artifacts' paths)
            self.profile = self.profile.replace(members=int(members))
        self.data_root, self.progress = data_root, progress
        self.parts = config.parse_parts(parts)
        self.paths = config.get_paths(out_root, self.profile.task, self.parts).make()
        self.device = config.get_device()
        config.seed_everything(self.profile.seed)
        self.posteriors = posteriors.Posteriors(self.member, self.profile.members)
        self._members: dict[int, Member] = {}

    # data ----------------------------------------------------------------------------------------------------
    @cached_property
    def _prepared(self):
        return data.prepare(self.profile, self.data_root, self.paths, progress=self.progress, parts=self.parts)

    @property
    def source(self) -> dict:
        """dict(source="mura" | "phantom", root=...)."""
        return self._prepared[0]

    @property
    def root(self) -> str:
        """The data's root as the report shows it (relative to the repository where it lies inside)."""
        return config.display_path(self.source["root"])

    @property
    def cache(self) -> data.ImageCache:
        return self._prepared[2]

    @property
    def index(self):
        """The readable images with their subset and per-image statistics."""
        return self.cache.index

    @cached_property
    def datasets(self):
        """The task's datasets (`train.Splits`: train, val, cal, test)."""
        return train.datasets(self.profile, self.cache, self.parts)

    @property
    def test(self):
        return self.datasets.test

    @property
    def y(self) -> np.ndarray:
        """Test targets."""
        return self.test.targets

    @property
    def groups(self) -> np.ndarray:
        """Test study ids: the unit the bootstrap resamples."""
        return self.test.index.study_id.to_numpy()

    @property
    def classes(self) -> list[str]:
        return list(self.test.classes)

    @property
    def n_boot(self) -> int:
        """Study-bootstrap replicates of every interval: the profile's `n_boot`."""
        return self.profile.n_boot

    def note(self):
        """Markdown saying where the images came from (`sources.source_note`)."""

        note = source_note(self.source, self.index)
        if self.paths.variant:
            note += (f" **This report runs the {self.profile.task} task" + (f" on {', '.join(self.parts)}" if self.parts
                     else "") + ".**")
        return Markdown(note)

    # members ---------------------------------------------------------------------------------------------------
    def train(self, members=None) -> list[dict]:
        """Train (or reuse) members (default: all of the profile's); their metadata."""
        members = range(self.profile.members) if members is None else members
        return [train.train_member(self.profile, m, self.cache, self.paths, self.device, self.parts,
                                   progress=self.progress) for m in members]

    def member(self, m: int) -> Member:
        """Member `m`, trained first where needed."""
        if m not in self._members:
            self.train([m])
            self._members[m] = Member(self, m)
        return self._members[m]

    @property
    def members(self) -> list[Member]:
        """Every member of the ensemble, trained first where needed."""
        return [self.member(m) for m in range(self.profile.members)]

    @property
    def models(self) -> list[torch.nn.Module]:
        return [m.model for m in self.members]

    # posteriors ------------------------------------------------------------------------------------------------
    def labels(self, **kw) -> list[str]:
        """Registered posteriors this run can fit (MC dropout only with dropout)."""
        return posteriors.labels(dropout=self.profile.dropout > 0, **kw)

    def posterior(self, label: str, member: int = 0):
        """The fitted posterior `label` of member `member`, or the combination `label` over all members
        (`posteriors.Posteriors`: built once, fitted on first use)."""
        return self.posteriors(label, member)

    def predictions(self, labels=None, subset: str = "test") -> dict[str, posteriors.Predictions]:
        """{label: `posteriors.Predictions`} on a split, one record of the same shape for every label: a
        single-model method's members (all of them, or the registry's `members` where it limits them), or the
        members a combination averages."""
        out = {}
        for label in self.labels() if labels is None else labels:
            if posteriors.REGISTRY[label].combination:
                out[label] = self.posterior(label).predict(subset)
                continue
            n = min(posteriors.REGISTRY[label].members or self.profile.members, self.profile.members)
            runs = [self.posterior(label, m).predict(subset) for m in range(n)]
            out[label] = posteriors.Predictions(
                label, np.stack([r["probs"] for r in runs]), member_samples=[r.get("samples") for r in runs],
                info=[{k: v for k, v in r.items() if k not in ("probs", "samples")} for r in runs])
        return out

    def predictor(self, labels=None, n_samples: int = 100):
        """A `BatchPredictor` of `labels` (default: those in the robustness chapter) on any batch of images."""
        return BatchPredictor(self.posteriors, self.labels(robustness=True) if labels is None else labels,
                              n_samples, seed=self.profile.seed)

    # outputs ---------------------------------------------------------------------------------------------------
    def header(self) -> dict:
        """What every results JSON starts with (task and parts only where they differ from the main report's)."""
        h = dict(source=self.source["source"], profile=self.profile.name)
        if self.paths.variant:
            h.update(task=self.profile.task, parts=self.parts or "all")
        return h

    def write_results(self, name: str, payload: dict):
        return write_results(name, {**self.header(), **payload}, self.paths.results)

    def write_timings(self, name: str, payload: dict):
        return write_timings(name, payload, self.paths.report)

    def savefig(self, fig, name: str):
        return savefig(fig, name, self.paths.figures)


class BatchPredictor:
    """Every chosen posterior's predictive on one batch of images, as `posteriors.Predictions`: member 0 for a
    single-model method (with its samples where it is stochastic, drawn with the run's seed), every member for a
    combination; each member's features are computed once per batch."""

    def __init__(self, posts: posteriors.Posteriors, labels, n_samples: int = 100, seed: int = 0):
        self.posts, self.labels, self.n_samples, self.seed = posts, list(labels), n_samples, seed
        self.combos = {lab for lab in self.labels if posteriors.REGISTRY[lab].combination}
        self.n_members = posts.n_members if self.combos else 1
        self.models = [posts.member(m).model.eval().to(memory_format=torch.channels_last) for m in range(self.n_members)]
        for label in self.labels:  # fit outside inference mode (laplace-torch needs gradients)
            post = posts(label)
            for q in getattr(post, "posteriors", [post]):
                q.fit()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> dict[str, posteriors.Predictions]:
        phis = [m.embed(x.contiguous(memory_format=torch.channels_last)) for m in self.models]
        out = {}
        for label in self.labels:
            post = self.posts(label)
            if label in self.combos:
                members = post.sample_probs(phis)
                out[label] = posteriors.Predictions(label, members, combination=True)
                continue
            inputs = x if post.inputs == "images" else phis[0]
            if post.stochastic:
                probs, samples = post.probs_and_samples(inputs, self.n_samples, self.seed)
                out[label] = posteriors.Predictions(label, probs[None], member_samples=[samples])
            else:
                out[label] = posteriors.Predictions(label, post.probs(inputs)[None])
        return out

    def batched(self, xs: torch.Tensor, batch: int = 256) -> dict[str, posteriors.Predictions]:
        parts = [self(xs[i:i + batch]) for i in range(0, len(xs), batch)]
        out = {}
        for name, first in parts[0].items():
            members = np.concatenate([p[name].members for p in parts], axis=1)
            samples = ([np.concatenate([p[name].member_samples[0] for p in parts], axis=1)]
                       if first.member_samples else [])
            out[name] = posteriors.Predictions(name, members, first.combination, samples)
        return out
