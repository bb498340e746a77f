"""Posteriors: every predictive this study compares, behind one interface.

A trained member is a network f(x) = W phi(x) + b with penultimate features phi(x). Each method is a class bound
to one member (`base.Posterior`); the registry (`registry`) gives each a stable label, the flags that say where it
appears, and builds it for a member or combines it over members:

=====================================  ==========================================================================
module                                 what it holds
=====================================  ==========================================================================
`base`                                 the contract (`Posterior`, `MemberLike`, `Predictions`), saving predictions
`simple`                               MAP, temperature scaling, MC dropout
`laplace`                              last-layer Laplace (diag, kron, full; kron with a layer-wise prior)
`all_weights`                          K-FAC Laplace over every weight, its GLM predictive and sampled networks
`combine`                              the deep ensemble and the mixture of Laplace (means over members)
`registry`                             labels, flags, `register(...)`, `make`, `combine`, `labels`
`bayes`                                the Laplace maths: fit, prior search, probit, samples; temperature
`store`                                the member's cached features and the saved predictions on disk
`standalone`                           `ArrayMember`: a member held in memory, without a Run (tests, networks from elsewhere)
=====================================  ==========================================================================

Adding a method is one class in a file of its own and one `register(...)` line in `registry`; every table and figure
then shows it (tests/test_posteriors.py registers a dummy posterior and checks this).
"""
from .all_weights import LaplaceAllWeights, LaplaceAllWeightsNarrowed, glm_probit
from .base import MemberLike, Posterior, PosteriorNotComputable, Predictions, fit_info
from .combinations import Combination
from .laplace import Laplace, LaplaceDiag, LaplaceFull, LaplaceKron, LaplaceKronLayerwise
from .registry import REGISTRY, Entry, Posteriors, combine, labels, make, register
from .simple import MAP, MCDropout, Temperature, mc_dropout_heads
from .standalone import ArrayMember
