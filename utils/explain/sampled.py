"""Explanations of networks sampled from the all-weights posterior: the CAM and Grad-CAM of every draw of the
weights, one forward pass per draw or vectorised over draws (`posteriors.all_weights.over_samples`)."""

from __future__ import annotations

import torch

from utils.explain.methods import center_weights, upsample
from utils.posteriors.all_weights import over_samples

# --------------------------------------------------------------------------- explanations per sample


def _cam(model, x, target, center):
    fmap = model.features(x)
    W = center_weights(model.fc.weight) if center else model.fc.weight
    return torch.einsum("bk,bkij->bij", W[target], fmap)


def sample_cams(model, thetas: torch.Tensor, x: torch.Tensor, target, center: bool = True,
                vectorised: bool | None = None) -> torch.Tensor:
    """CAMs (centred over classes, as `explain.CAM`) of the network at each of S sampled weight vectors,
    upsampled to the input: S x B x H x W."""
    target = torch.as_tensor(target, device=x.device).long().expand(len(x))
    with torch.no_grad():
        maps = over_samples(model, thetas, x, target, fn=lambda m, x, t: _cam(m, x, t, center),
                            vectorised=vectorised)
    return upsample(maps, x.shape[-2:])


def _gradcam(model, x, target, split, relu):
    """Grad-CAM at the output of model.features[:split] (functional: no hooks, so it runs under vmap)."""
    lower, upper = model.features[:split], model.features[split:]
    a = lower(x)

    def top(a):
        return model.fc(model.pool(upper(a))).gather(1, target[:, None]).sum()

    g = torch.func.grad(top)(a)
    m = (g.mean((-2, -1), keepdim=True) * a).sum(1)
    return torch.relu(m) if relu else m


def gradcam_split(model) -> int:
    """The default Grad-CAM layer for sampled networks: the output of the block before the last convolution
    (at the last convolution of a pooled linear head Grad-CAM is the CAM / (h w) for every sample)."""
    convs = [i for i, m in enumerate(model.features) if isinstance(m, torch.nn.Conv2d)]
    if len(convs) < 2:
        raise ValueError("the network has fewer than two convolutions in `features`: no layer before the last")
    return convs[-1]


def sample_gradcams(model, thetas: torch.Tensor, x: torch.Tensor, target, split: int | None = None,
                    relu: bool = True, vectorised: bool | None = None) -> torch.Tensor:
    """Grad-CAM of the network at each of S sampled weight vectors at the output of `model.features[:split]`
    (default `gradcam_split`), upsampled: S x B x H x W."""
    split = gradcam_split(model) if split is None else split
    target = torch.as_tensor(target, device=x.device).long().expand(len(x))
    maps = over_samples(model, thetas, x.detach(), target, fn=lambda m, x, t: _gradcam(m, x, t, split, relu),
                        vectorised=vectorised)
    return upsample(maps.detach(), x.shape[-2:])
