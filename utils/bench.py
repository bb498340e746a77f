"""Benchmarks that print their figures and the ratios against the naive way, measured in the same run.

    python -m utils.bench data [--profile cpu]     # DataLoader images/s: memory-mapped cache vs decoding PNGs
    python -m utils.bench train                    # training images/s per architecture on this device
    python -m utils.bench laplace                  # Laplace fit + prior: cached features (with and without
                                                   #   the one-off feature extraction) vs whole network
    python -m utils.bench explain                  # CAMs of 100 Laplace samples: vectorised vs per sample;
                                                   #   CAM / Grad-CAM of 16 all-weights Laplace networks: vmap vs
                                                   #   one pass per sample
    python -m utils.bench all

Each stage is a function `bench_<stage>(profile, paths, args) -> dict` registered in STAGES;
`all` runs every stage. Timings are wall-clock on the current machine and device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from utils import data, explain
from utils.chapters import laplace
from utils.config import get_device, get_paths, get_profile
from utils.data.images import BatchAugment
from utils.explain import sampled
from utils.models.networks import ARCHS, build_model
from utils.posteriors import bayes
from utils.run import Run


def rss_anon_mb() -> float:
    """Anonymous resident memory of this process (MB): heap and copies, not file-backed memmap pages."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one_pass(loader) -> tuple[int, float]:
    t = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += len(x)
    return n, time.perf_counter() - t


def bench_data(profile, paths, args) -> dict:
    """One pass over the training split through the DataLoader, from the cache and from the PNGs."""
    src, index, cache = data.prepare(profile, args.data, paths, progress=False)
    with tempfile.TemporaryDirectory() as tmp:  # the one-off cost of building the cache, cold
        t = time.perf_counter()
        data.build_cache(index, profile.image_size, tmp, progress=False)
        build_s = time.perf_counter() - t
    kw = dict(batch_size=profile.batch_size, num_workers=args.workers if args.workers is not None
              else profile.num_workers)
    cached = data.CachedImages(cache, "train", task=profile.task)
    pngs = data.PngImages(cache, "train", task=profile.task)
    if args.max_images:
        keep = np.arange(min(args.max_images, len(cached)))
        for ds in (cached, pngs):
            ds.index, ds.rows, ds.targets = ds.index.iloc[keep], ds.rows[keep], ds.targets[keep]
    mem0 = rss_anon_mb()
    n, t_cache = _one_pass(data.make_loader(cached, **kw))
    mem_growth = rss_anon_mb() - mem0
    n2, t_png = _one_pass(data.make_loader(pngs, **kw))
    assert n == n2
    array_mb = os.path.getsize(cache.array_path) / 2**20
    out = dict(
        source=src["source"], images=n, image_size=profile.image_size, workers=kw["num_workers"],
        batch_size=kw["batch_size"], cache_build_s=round(build_s, 2),
        cache_build_images_per_s=round(len(index) / build_s, 1),
        cache_images_per_s=round(n / t_cache, 1), png_images_per_s=round(n / t_png, 1),
        speedup=round(t_png / t_cache, 1), cache_array_mb=round(array_mb, 1),
        rss_anon_growth_mb=round(mem_growth, 1),
    )
    print(f"data  ({out['source']}, {n} train images at {profile.image_size} px, batch {kw['batch_size']}, "
          f"{kw['num_workers']} workers)")
    print(f"  cache build, once (cold, {os.cpu_count()} procs): {build_s:8.2f} s  "
          f"({out['cache_build_images_per_s']:.0f} images/s)")
    print(f"  one pass from the memory-mapped cache: {out['cache_images_per_s']:10.0f} images/s")
    print(f"  one pass decoding the PNGs each time:  {out['png_images_per_s']:10.0f} images/s")
    print(f"  ratio cache / PNG:                     {out['speedup']:10.1f} x   (target >= 10 x)")
    print(f"  memory: cache array {array_mb:.1f} MB on disk; anonymous RSS grew {mem_growth:.1f} MB "
          "during the cached pass (the array is not loaded into RAM)")
    return out


def bench_train(profile, paths, args) -> dict:
    """Training images/s (forward, backward, step, batch augmentation) for each architecture at the
    profile's image size and batch size on the current device, from synthetic batches."""

    device = get_device()
    amp = device.type == "cuda"
    bs, size = profile.batch_size, profile.image_size
    out = {}
    print(f"train  ({size} px, batch {bs}, device {device}{', bf16 autocast, channels-last' if amp else ''})")
    for arch in ARCHS:
        torch.manual_seed(0)
        model = build_model(arch, 7, profile.dropout).to(device).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9)
        x = torch.randn(bs, 1, size, size, device=device)
        y = torch.randint(0, 7, (bs,), device=device)
        aug, g = BatchAugment(), torch.Generator().manual_seed(0)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = torch.nn.functional.cross_entropy(model(aug(x, g).contiguous(
                    memory_format=torch.channels_last)).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(2):
            step()
        if amp:
            torch.cuda.synchronize()
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < args.seconds:
            step()
            n += 1
        if amp:
            torch.cuda.synchronize()
        ips = n * bs / (time.perf_counter() - t)
        out[arch] = round(ips, 1)
        print(f"  {arch:9s} {ips:10.0f} images/s")
    return out


def bench_laplace(profile, paths, args) -> dict:
    """Last-layer Laplace of member 0: fit + prior optimisation on cached features against the whole network."""
    run = Run(profile, args.data, paths.out_root)
    member = run.members[0]
    print(f"laplace  (member 0 of the {profile.name} profile, marginal-likelihood prior; seconds)")
    print(f"  {'structure':9s} {'features':>9s} {'network':>9s} {'ratio':>7s} {'ratio+ex':>9s}   (features: fit + "
          "prior; ratio: network / features without the one-off feature extraction; ratio+ex: with it)")
    out = {}
    for s in bayes.STRUCTURES:
        r = laplace.compare_fit_cost(member.model, member.meta, run.datasets[0], s, run.device)
        f, w = r["features_fit_s"] + r["features_prior_s"], r["network_fit_s"] + r["network_prior_s"]
        print(f"  {s:9s} {f:9.3f} {w:9.3f} {r['ratio']:6.1f}x {r['ratio_with_extraction']:8.1f}x   (prior precision "
              f"{r['prior_features']:.4g} vs {r['prior_network']:.4g})")
        out[s] = r
    print(f"  feature extraction, once per member and split (shared by every structure and prior search; in "
          f"ratio+ex, charged to each structure in full): {r['features_extract_s']:.2f} s")
    return out


def bench_explain(profile, paths, args) -> dict:
    """CAMs of S = 100 Laplace head samples for a batch: vectorised (one forward pass, one einsum) against one
    forward pass per sample, on member 0 of the profile."""

    run = Run(profile, args.data, paths.out_root)
    model = run.members[0].model
    W = run.posterior("Laplace, kron").head_samples(100, seed=0)
    te = run.test
    x, y = next(iter(data.make_loader(te, profile.batch_size)))

    def timed(f, reps=3):
        f()
        t = time.perf_counter()
        for _ in range(reps):
            out = f()
        return (time.perf_counter() - t) / reps, out

    t_fast, fast = timed(lambda: explain.laplace_cams(model, x, W, y))
    t_slow, slow = timed(lambda: explain.laplace_cams_loop(model, x, W, y))
    assert torch.allclose(fast, slow, atol=1e-4)
    out = dict(samples=100, batch=len(x), image_size=profile.image_size, vectorised_s=t_fast, per_sample_s=t_slow,
               speedup=t_slow / t_fast)
    print(f"explain  (CAMs of 100 Laplace samples, batch of {len(x)} at {profile.image_size} px, member 0)")
    print(f"  vectorised (1 forward pass, 1 einsum): {t_fast * 1e3:9.1f} ms")
    print(f"  one forward pass per sample:           {t_slow * 1e3:9.1f} ms")
    print(f"  ratio:                                 {t_slow / t_fast:9.1f} x   (target >= 10 x)")

    # networks drawn from the all-weights Laplace: functional_call under vmap against one pass per sample

    post = run.posterior("Laplace, kron, all weights")
    thetas, net = post.parameter_samples(16, seed=0), post.model
    xd, yd = x.to(post.mean.device), y.to(post.mean.device)
    out["all_weights"] = {}
    print(f"explain  (maps of 16 networks from the all-weights Laplace, same batch, device {xd.device})")
    for name, f in (("CAM", sampled.sample_cams), ("Grad-CAM", sampled.sample_gradcams)):
        t_vec, a = timed(lambda: f(net, thetas, xd, yd, vectorised=True))
        t_loop, b = timed(lambda: f(net, thetas, xd, yd, vectorised=False))
        assert torch.allclose(a, b, atol=1e-2 * float(b.abs().max()), rtol=1e-3)  # float32 sums in another order
        out["all_weights"][name] = dict(samples=16, vmap_s=t_vec, loop_s=t_loop, ratio=t_loop / t_vec)
        print(f"  {name:8s} vmap over samples {t_vec * 1e3:8.1f} ms, one pass per sample {t_loop * 1e3:8.1f} ms: "
              f"ratio loop / vmap {t_loop / t_vec:5.2f} x")
    return out


STAGES = {"data": bench_data, "train": bench_train, "laplace": bench_laplace, "explain": bench_explain}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m utils.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=[*STAGES, "all"])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--data", default="", help="MURA-v1.1 folder; empty: the profile's phantom")
    ap.add_argument("--out-root", default="")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the profile's)")
    ap.add_argument("--max-images", type=int, default=0, help="limit each pass to this many images")
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per architecture (train)")
    ap.add_argument("--json", default="", help="also write the figures to this JSON file")
    a = ap.parse_args(argv)
    profile, paths = get_profile(a.profile), get_paths(a.out_root).make()
    print(f"# utils.bench on {platform.node()} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, device {get_device()}), profile {profile.name}")
    results = {s: STAGES[s](profile, paths, a) for s in (STAGES if a.stage == "all" else [a.stage])}
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
