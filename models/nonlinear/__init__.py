"""Continuous-state SSMs: linear Gaussian, stochastic volatility, growth, Lorenz-96, chaotic RNN, Poisson LDS."""

from pssm.models.nonlinear.linear_gaussian import LGSSMParams, LinearGaussianSSM
from pssm.models.nonlinear.models import *  # noqa: F403
from pssm.models.nonlinear.models import __all__ as _all

__all__ = ["LGSSMParams", "LinearGaussianSSM", *_all]
