"""The run object end to end on a tiny tree: members, every registered posterior's predictions, reloading a run,
the batch predictor, and the seam (a newly registered posterior reaches the tables without other edits)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils import config, posteriors
from utils.chapters import calibration, robustness
from utils.chapters import laplace as laplace_chapter
from utils.run import Run


def _profile():
    return config.get_profile("smoke", image_size=32, batch_size=16, epochs=1, members=2)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="module")
def run(smoke_tree, out):
    torch.set_num_threads(1)
    r = Run(_profile(), smoke_tree, out)
    r.predictions()  # trains both members, fits and saves every registered posterior
    return r


def test_a_run_owns_its_data_members_and_paths(run, out):
    assert run.source["source"] == "mura" and run.paths.out_root == out
    assert len(run.members) == 2 and run.classes == list(config.BODY_PARTS)
    assert len(run.y) == len(run.groups) == len(run.test)
    assert run.member(1) is run.members[1]
    assert run.n_boot == 400  # smoke


def test_predictions_hold_every_registered_posterior(run):
    preds = run.predictions()
    assert list(preds) == run.labels() == posteriors.labels()  # the smoke profile has dropout
    n, c = len(run.y), len(run.classes)
    for label, p in preds.items():
        if posteriors.REGISTRY[label].combination:
            assert p["probs"].shape == (n, c) and p["samples"].shape == (2, n, c)
            singles = preds[posteriors.REGISTRY[label].of]["probs"]
            np.testing.assert_allclose(p["probs"], singles.mean(0))
        else:
            m = posteriors.REGISTRY[label].members or 2  # the costly ones are fitted on fewer members
            assert p["probs"].shape == (m, n, c) and len(p["info"]) == m
    assert preds["Laplace, kron, all weights"]["probs"].shape[0] == 1  # member 0 only


def test_a_new_run_on_the_same_outputs_reloads_without_refitting(run, smoke_tree, out):
    again = Run(_profile(), smoke_tree, out)
    preds, before = again.predictions(), run.predictions()
    for label in preds:
        np.testing.assert_array_equal(preds[label]["probs"], before[label]["probs"])
    fitted = [p._fitted for key, p in again._posteriors.items() if isinstance(p, posteriors.Posterior)]
    assert fitted and not any(fitted)


def test_the_batch_predictor_agrees_with_the_saved_predictions(run):
    x = robustness.images(run.cache, run.test.rows)
    labels = run.labels(robustness=True)
    batch = run.predictor(labels).batched(x, batch=50)
    saved = run.predictions(labels)
    for label in labels:
        want = saved[label]["probs"] if posteriors.REGISTRY[label].combination else saved[label]["probs"][0]
        np.testing.assert_allclose(batch[label]["probs"], want, atol=2e-6)
    assert batch["deep ensemble"]["samples"].shape == (2, len(x), len(run.classes))
    assert batch["Laplace, kron"]["samples"].shape == (100, len(x), len(run.classes))


class Sharpened(posteriors.MAP):
    """A posterior the repository does not register: the MAP logits doubled."""

    key = "sharpened"

    def probs(self, phi):
        return torch.softmax(2 * self._logits(phi), 1).double().numpy()

    def _predict(self, subset):
        return self.probs(self.member.features(subset)[0]), None, {}


def test_a_newly_registered_posterior_reaches_the_tables_without_other_edits(run, monkeypatch):
    monkeypatch.setitem(posteriors.REGISTRY, "sharpened MAP", None)  # taken out again after the test
    posteriors.register("sharpened MAP", Sharpened, robustness=True)
    preds = run.predictions()
    assert "sharpened MAP" in preds
    tab = calibration.interval_table(preds, run.y, run.groups, n_boot=50)
    assert "sharpened MAP" in set(tab.method)
    x = robustness.images(run.cache, run.test.rows[:20])
    assert "sharpened MAP" in run.predictor().batched(x)
    fits = laplace_chapter.fit_table(preds, run.y)
    assert "sharpened MAP" in set(fits.method)
