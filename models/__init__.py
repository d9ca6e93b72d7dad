"""Model families: each a final :class:`pssm.SSM` (fixed settings) plus a params ``NamedTuple``."""

from pssm.models.hmm import (
    HMM,
    CategoricalEmissions,
    CategoricalParams,
    EmissionModel,
    GaussianEmissions,
    GaussianParams,
    HMMParams,
    PoissonEmissions,
    PoissonParams,
)
from pssm.models.linear_gaussian import LGSSMParams, LinearGaussianSSM

__all__ = [
    "HMM",
    "CategoricalEmissions",
    "CategoricalParams",
    "EmissionModel",
    "GaussianEmissions",
    "GaussianParams",
    "HMMParams",
    "LGSSMParams",
    "LinearGaussianSSM",
    "PoissonEmissions",
    "PoissonParams",
]
