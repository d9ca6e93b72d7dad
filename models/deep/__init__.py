"""Deep VAE state-space models: the deep Markov model / deep Kalman filter and its inference networks."""

from pssm.models.deep.dmm import EMISSIONS, DeepMarkovModel, DMMParams, emission_distribution, network_leaves
from pssm.models.deep.encoders import DIRECTIONS, Encoder, EncoderParams
from pssm.models.deep.networks import MADE, Combiner, ElmanCell, Emitter, GatedTransition, make_cell

__all__ = [
    "EMISSIONS",
    "DIRECTIONS",
    "DeepMarkovModel",
    "DMMParams",
    "Encoder",
    "EncoderParams",
    "Emitter",
    "GatedTransition",
    "Combiner",
    "ElmanCell",
    "MADE",
    "make_cell",
    "emission_distribution",
    "network_leaves",
]
