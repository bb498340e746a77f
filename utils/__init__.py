"""Explainable, Bayesian classification of X-ray images: the package the notebooks call."""
import warnings

# Raised inside dependencies at import time (torch.jit.script used by a curvature backend); not ours to fix,
# and noise in every executed notebook of the report.
warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
# captum imports tqdm.auto, which asks for ipywidgets inside a notebook; the text bar it falls back to is fine.
warnings.filterwarnings("ignore", message=r"IProgress not found")
