"""A member of the `base.MemberLike` contract without a `Run`: a network with its images and labels per split
held in memory. For the tests, and to try a posterior on a network trained elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from utils.models.networks import build_model


class ArrayMember:
    """Member `index` of an ensemble held in memory: `model` (put in eval mode), `images` {split: N x 1 x S x S}
    and `labels` {split: N}; its features and logits per split come from the model, as `run.Member`'s do, and
    its saved predictions go under `predictions_dir`."""

    def __init__(self, model: torch.nn.Module, images: dict, labels: dict, predictions_dir, index: int = 0,
                 meta: dict | None = None, device="cpu", batch_size: int = 32):
        self.model, self.index, self.predictions_dir = model.eval(), index, Path(predictions_dir)
        self.batch_size = batch_size
        self.meta = dict(prior_precision=1.0) if meta is None else meta
        self.device = torch.device(device)
        self._x = {s: torch.as_tensor(x) for s, x in images.items()}
        self._y = {s: np.asarray(y, np.int64) for s, y in labels.items()}
        with torch.no_grad():
            self._phi = {s: self.model.embed(x).numpy() for s, x in self._x.items()}

    @classmethod
    def random(cls, predictions_dir, index: int = 0, classes: int = 3, seed: int = 0, image_size: int = 16,
               sizes=(("train", 90), ("val", 40), ("cal", 40), ("test", 50))) -> "ArrayMember":
        """An untrained small network made confident (head weights x 30) on random images, with labels that
        mostly follow it (80 %), so that a posterior fitted on it is informed; everything drawn from `seed`."""
        torch.manual_seed(seed)
        model = build_model("small", classes, dropout=0.3).eval()
        with torch.no_grad():
            model.fc.weight.mul_(30)
        g = torch.Generator().manual_seed(seed + 1)
        x = {s: torch.randn(n, 1, image_size, image_size, generator=g) for s, n in sizes}
        with torch.no_grad():
            logits = {s: model.fc(model.embed(v)) for s, v in x.items()}
        y = {s: np.where(np.random.default_rng(seed).random(len(z)) < 0.8, z.argmax(1).numpy(),
                         np.random.default_rng(seed + 2).integers(0, classes, len(z))).astype(np.int64)
             for s, z in logits.items()}
        return cls(model, x, y, predictions_dir, index=index)

    def features(self, subset: str) -> tuple[np.ndarray, np.ndarray]:
        return self._phi[subset], self._y[subset]

    def logits(self, subset: str) -> np.ndarray:
        with torch.no_grad():
            return self.model.fc(torch.as_tensor(self._phi[subset])).numpy()

    def images(self, subset: str) -> torch.Tensor:
        return self._x[subset]

    def loader(self, subset: str):
        ds = torch.utils.data.TensorDataset(self._x[subset], torch.as_tensor(self._y[subset]))
        return torch.utils.data.DataLoader(ds, batch_size=self.batch_size)
