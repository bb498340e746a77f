"""The registry: every posterior's stable label, the flags that say where it appears (robustness chapter,
conformal sets, how many members), and the verbs that build one for a member (`make`) or over the members
(`combine`). Adding a method: one class and one `register(...)` line here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from utils.posteriors.all_weights import LaplaceAllWeights, LaplaceAllWeightsNarrowed
from utils.posteriors.base import MemberLike, Posterior
from utils.posteriors.combinations import Combination
from utils.posteriors.laplace import LaplaceDiag, LaplaceFull, LaplaceKron, LaplaceKronLayerwise
from utils.posteriors.simple import MAP, MCDropout, Temperature

# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Entry:
    """A registered method: its class (or, for a combination, the label it averages) and where it is shown.

    `robustness`: in notebook 06's sweeps (member 0, or all members for a combination); every entry is in
    notebook 04's calibration table. `conformal`: in notebook 04's conformal sets (which need its predictions on
    the validation split too). `members`: how many members (from member 0) a single-model method is fitted on,
    for the costly ones; None: all. `figures`: in notebook 04's reliability, selective and class-wise figures.
    `spread`: in notebook 05's question whether explanation spread flags errors (the spread of member 0's CAMs
    under the method's `head_samples`, or of the members' CAMs for a combination)."""

    label: str
    make: Callable[[MemberLike], Posterior] | None = None
    of: str | None = None
    robustness: bool = False
    needs_dropout: bool = False
    members: int | None = None
    conformal: bool = True
    figures: bool = True
    spread: bool = False

    @property
    def combination(self) -> bool:
        return self.of is not None


REGISTRY: dict[str, Entry] = {}


def register(label: str, cls: type[Posterior] | None = None, *, of: str | None = None, robustness: bool = False,
             needs_dropout: bool = False, members: int | None = None, conformal: bool = True, figures: bool = True,
             spread: bool = False) -> None:
    """Register a single-model method (`cls`) or a combination (`of`: the label of the method it averages) under
    `label`, with the flags of `Entry`: the one line a new method needs."""
    if (cls is None) == (of is None):
        raise ValueError("register a class, or the label of the single-model method a combination averages")
    if cls is not None:
        cls = type(cls.__name__, (cls,), dict(label=label, __doc__=cls.__doc__, __module__=cls.__module__))
    REGISTRY[label] = Entry(label, cls, of, robustness, needs_dropout, members, conformal, figures, spread)


register("MAP", MAP, robustness=True)
register("temperature scaling", Temperature, robustness=True)
register("MC dropout", MCDropout, needs_dropout=True, spread=True)
register("Laplace, diag", LaplaceDiag)
register("Laplace, kron", LaplaceKron, robustness=True, spread=True)
register("Laplace, full", LaplaceFull)
register("Laplace, kron, layer-wise prior", LaplaceKronLayerwise, robustness=True)
# not in the conformal sets: its linearised predictive is far too broad (notebook 02) and its validation-split
# predictions cost ~25 s of each report
register("Laplace, kron, all weights", LaplaceAllWeights, members=1, conformal=False)
# the same curvature with the prior raised until its sampled networks classify (chosen on the validation split)
register("Laplace, kron, all weights, narrowed prior", LaplaceAllWeightsNarrowed, members=1, conformal=False)
register("deep ensemble", of="MAP", robustness=True, spread=True)
register("mixture of Laplace, kron", of="Laplace, kron")


def labels(single: bool | None = None, robustness: bool | None = None, dropout: bool = True,
           conformal: bool | None = None, spread: bool | None = None) -> list[str]:
    """Registered labels in registration order, optionally only single-model ones or combinations, only those
    shown in the robustness chapter (or the conformal sets), and without those that need dropout
    (`dropout=False`)."""
    out = []
    for e in REGISTRY.values():
        if single is not None and e.combination == single:
            continue
        if robustness is not None and e.robustness != robustness:
            continue
        if conformal is not None and e.conformal != conformal:
            continue
        if spread is not None and e.spread != spread:
            continue
        if e.needs_dropout and not dropout:
            continue
        out.append(e.label)
    return out


def make(label: str, member: MemberLike) -> Posterior:
    """The single-model posterior `label` bound to `member` (not yet fitted)."""
    if label not in REGISTRY:
        raise KeyError(f"unknown posterior {label!r}; registered: {', '.join(REGISTRY)}")
    e = REGISTRY[label]
    if e.combination:
        raise ValueError(f"{label!r} combines members: build it with `combine(label, members)`")
    return e.make(member)


def combine(label: str, members: list[MemberLike]) -> Combination:
    """The combination `label` over `members`."""
    e = REGISTRY[label]
    if not e.combination:
        raise ValueError(f"{label!r} is a single-model method: build it with `make(label, member)`")
    return Combination(e.of, [make(e.of, m) for m in members], label=label)


class Posteriors:
    """The posteriors of one ensemble's members, each built from the registry and fitted once per (label, member):
    what `Run.posterior` serves and `run.BatchPredictor` predicts with. `member(m)` returns member m (a
    `MemberLike`; `Run.member` trains it first where needed); `n_members` is how many a combination averages."""

    def __init__(self, member: Callable[[int], MemberLike], n_members: int):
        self.member, self.n_members = member, int(n_members)
        self.built: dict = {}  # (label, member) -> the posterior built for it

    def __call__(self, label: str, member: int = 0) -> Posterior | Combination:
        """The posterior `label` of member `member`, or the combination `label` over all members."""
        key = (label, member)
        if key not in self.built:
            if label not in REGISTRY:
                raise KeyError(f"unknown posterior {label!r}; registered: {', '.join(REGISTRY)}")
            if REGISTRY[label].combination:
                self.built[key] = combine(label, [self.member(m) for m in range(self.n_members)])
            else:
                self.built[key] = make(label, self.member(member))
        return self.built[key]
