"""Hidden Markov models: the discrete-state model and its components."""

from pssm.models.hmm.model import *  # noqa: F403
from pssm.models.hmm.model import __all__  # noqa: F401
