"""Maximum likelihood by stochastic score ascent with particle score estimates.

With :math:`\\theta \\mapsto` ``params_fn(theta)`` (any differentiable parameterisation), iterate

.. math::  \\theta_{k+1} = \\theta_k + \\gamma_k \\, \\widehat{\\nabla_\\theta \\log p_{\\theta_k}(y_{0:T-1})} / T

through an ``optax`` optimiser (it receives the negated, per-step score as a gradient), where the score comes from
Fisher's identity as an additive functional (:func:`pssm.inference.smc.score_functional`, chained through
``params_fn`` by a vector–Jacobian product) smoothed by

* ``estimator="paris"``: a fresh PaRIS pass at every iteration (bias :math:`O(T/N)`), or
* ``estimator="ppg"``: one PaRIS particle Gibbs iteration whose frozen path is carried across θ-updates (a Markovian
  stochastic approximation; bias reduced at small :math:`N`).

Leaves of ``theta`` named in ``frozen`` (dotted paths) get zero gradient and zero update, so they stay bit for bit.
Runs in jitted chunks with an optional progress bar, returns a trace (θ, score, log-likelihood estimates) and a
state from which a later call resumes.  ``theta_average`` is the Polyak–Ruppert average of the second half of the
iterates.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from pssm.arviz import to_arviz
from pssm.display import short_repr
from pssm.inference.chunked import run_chunked
from pssm.inference.mcmc.csmc import validate_num_particles, validate_reference, validate_sequence
from pssm.inference.mcmc.ppg import PPGState, paris_sweep, ppg_step, validate_backward
from pssm.inference.smc.backward import BackwardKernel
from pssm.inference.smc.filter import FeynmanKac, as_feynman_kac
from pssm.inference.smc.paris import default_backward_kernel, paris, score_functional
from pssm.jit import SameFunction
from pssm.params import ParamSpec, freeze, path_name, trainable_mask
from pssm.protocol import SSM, PyTree
from pssm.validation import check_key

if TYPE_CHECKING:
    import arviz as az

__all__ = ["ScoreAscentState", "ScoreAscentResult", "score_estimate", "score_ascent_step", "score_ascent"]

ESTIMATORS = ("paris", "ppg")


class ScoreAscentState(NamedTuple):
    theta: PyTree
    opt_state: Any
    frozen_path: Array
    """PPG's carried path (unused by PaRIS)."""
    iteration: Int[Array, ""]


class ScoreAscentResult(NamedTuple):
    theta: PyTree
    """Final iterate."""
    theta_average: PyTree
    """Average of the second half of this call's iterates (Polyak–Ruppert)."""
    theta_trace: PyTree
    """Iterates after each update, leading axis ``num_iters``."""
    score_trace: PyTree
    """Score estimates w.r.t. ``theta`` (full, not divided by T)."""
    log_likelihood_trace: Float[Array, " k"]
    """PaRIS: the filter's log-likelihood estimate; PPG: the conditional filter's log normaliser (biased upward —
    a trend diagnostic only)."""
    state: ScoreAscentState

    __repr__ = short_repr


def score_estimate(
    key: PRNGKeyArray,
    fk: FeynmanKac,
    params_fn: Callable[[PyTree], PyTree],
    theta: PyTree,
    emissions: Array,
    num_particles: int,
    *,
    estimator: str = "paris",
    frozen_path: Array | None = None,
    num_backward: int = 2,
    backward: BackwardKernel | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
) -> tuple[PyTree, Float[Array, ""], Array | None]:
    """``(score w.r.t. theta, log-likelihood estimate, new frozen path or None)`` (traceable; no validation)."""
    params, vjp = jax.vjp(params_fn, theta)
    functional = score_functional(fk.model, params)
    backward = default_backward_kernel(fk.model) if backward is None else backward
    if estimator == "ppg":
        st, info = ppg_step(
            key,
            PPGState(frozen_path),
            fk,
            params,
            emissions,
            functional,
            num_particles,
            num_backward=num_backward,
            backward=backward,
            inputs=inputs,
            mask=mask,
        )
        est, ll, path = info.estimate, info.log_likelihood, st.frozen_path
    else:
        r = paris(
            key,
            fk,
            params,
            emissions,
            num_particles,
            functional,
            num_backward=num_backward,
            backward=backward,
            inputs=inputs,
            mask=mask,
            resampling="multinomial",
            ess_threshold=1.0,
        )
        est, ll, path = r.estimate, r.log_likelihood, frozen_path
    est = jax.tree.map(lambda e, p: e.astype(jnp.result_type(p)), est, params)
    (g,) = vjp(est)
    return g, ll, path


def score_ascent_step(
    key: PRNGKeyArray,
    state: ScoreAscentState,
    fk: FeynmanKac,
    params_fn: Callable[[PyTree], PyTree],
    optimizer: optax.GradientTransformation,
    emissions: Array,
    num_particles: int,
    *,
    estimator: str = "paris",
    num_backward: int = 2,
    backward: BackwardKernel | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
    trainable: PyTree | None = None,
) -> tuple[ScoreAscentState, tuple[PyTree, Float[Array, ""]]]:
    """One update (pure kernel): score estimate at ``state.theta``, then the optimiser step on ``-score / T``.

    ``trainable``: a pytree of Python bools shaped like ``theta`` (``None``: all ``True``); a ``False`` leaf gets
    a zero gradient and keeps its value bit for bit."""
    T = emissions.shape[0]
    g, ll, path = score_estimate(
        key,
        fk,
        params_fn,
        state.theta,
        emissions,
        num_particles,
        estimator=estimator,
        frozen_path=state.frozen_path,
        num_backward=num_backward,
        backward=backward,
        inputs=inputs,
        mask=mask,
    )
    neg = jax.tree.map(lambda v: -v / T, g)
    if trainable is not None:
        neg = jax.tree.map(lambda m, v: v if m else jnp.zeros_like(v), trainable, neg)
    updates, opt_state = optimizer.update(neg, state.opt_state, state.theta)
    theta = optax.apply_updates(state.theta, updates)
    if trainable is not None:  # not theta + 0: keep frozen leaves exactly (optimisers such as weight decay move them)
        theta = jax.tree.map(lambda m, new, old: new if m else old, trainable, theta, state.theta)
    return ScoreAscentState(theta, opt_state, path, state.iteration + 1), (g, ll)


def _theta_trainable(theta: PyTree, frozen: Sequence[str]) -> PyTree | None:
    """Bool pytree like ``theta``: ``False`` at and below the dotted paths in ``frozen`` (``None`` if none)."""
    if not frozen:
        return None
    fake = jax.tree.map(lambda _: ParamSpec(), theta)
    try:
        return trainable_mask(freeze(fake, *frozen))
    except KeyError as err:
        raise KeyError(f"score_ascent frozen=: {err.args[0]}") from None


def _sweep(kk, st, fk, params_fn, optimizer, emissions, num_particles, estimator, num_backward, backward, *rest):
    """One update with its stored outputs; module level, so repeated calls compile once."""
    inputs, mask, trainable = rest
    st, (g, ll) = score_ascent_step(
        kk,
        st,
        fk,
        params_fn,
        optimizer,
        emissions,
        num_particles,
        estimator=estimator,
        num_backward=num_backward,
        backward=backward,
        inputs=inputs,
        mask=mask,
        trainable=trainable,
    )
    return st, (st.theta, g, ll)


def score_ascent(
    key: PRNGKeyArray,
    model: SSM | FeynmanKac,
    theta0: PyTree | None,
    emissions: Array,
    *,
    params_fn: Callable[[PyTree], PyTree],
    optimizer: optax.GradientTransformation,
    num_iters: int,
    frozen: Sequence[str] = (),
    estimator: str = "paris",
    num_particles: int = 50,
    num_backward: int = 2,
    backward: BackwardKernel | None = None,
    state: ScoreAscentState | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
    progress: bool = False,
    chunk_size: int = 50,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
) -> ScoreAscentResult:
    """Stochastic score ascent from ``theta0`` (or from ``state`` of a previous result, same optimiser).

    ``params_fn(theta) -> params`` maps the optimised pytree (e.g. unconstrained: log standard deviations) to model
    params.  ``estimator``: ``"paris"`` or ``"ppg"`` (PPG's frozen *path* carried across updates).  ``frozen``:
    dotted paths into ``theta0`` (e.g. ``"log_sx"``, ``"emissions.cov"``; ``"*"`` = all) whose gradients and
    updates are zeroed, so those leaves stay bit for bit at their starting values.
    ``checkpoint``: a file the run is saved to every ``checkpoint_every`` chunks of ``chunk_size`` iterations and
    resumed from when it exists, ending exactly as an uninterrupted run (:func:`pssm.inference.chunked.run_chunked`).
    """
    check_key(key)
    fk = as_feynman_kac(model)
    emissions, mask, inputs = validate_sequence(emissions, inputs, mask, model=fk)
    num_particles = validate_num_particles(num_particles)
    num_backward = validate_backward(num_backward, backward)
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r} is unknown; use one of {ESTIMATORS}.")
    if not callable(params_fn):
        raise TypeError("params_fn must be a callable theta -> params.")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError("optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-2)).")
    k = validate_num_particles(num_iters, 1, "num_iters")
    if isinstance(frozen, str):
        frozen = (frozen,)
    frozen = tuple(frozen)
    backward = default_backward_kernel(fk.model) if backward is None else backward
    k_init, k_run = jax.random.split(key)
    if state is None:
        if theta0 is None:
            raise TypeError("theta0 is None; pass the starting pytree (or state= to resume).")
        theta0 = jax.tree.map(lambda a: jnp.asarray(a, jnp.result_type(float)), theta0)
        try:
            params0 = params_fn(theta0)
        except Exception as err:  # noqa: BLE001 - report the user's mapping failing on theta0
            raise ValueError(
                f"params_fn(theta0) failed with {type(err).__name__}: {err}. params_fn must map theta0 (the "
                "pytree of unconstrained values being optimised) to the model's params, e.g. "
                "lambda th: model.make_params(sigma=jnp.exp(th['log_sigma'])); check that theta0 holds every "
                "entry params_fn reads."
            ) from err
        if estimator == "ppg":  # the first frozen path: a PaRIS pass at theta0, refreshed through its indices
            functional = score_functional(fk.model, params0)
            path = eqx.filter_jit(paris_sweep)(
                k_init,
                fk,
                params0,
                emissions,
                functional,
                num_particles,
                num_backward=num_backward,
                backward=backward,
                inputs=inputs,
                mask=mask,
                store=True,
            ).path
        else:
            path = jnp.zeros((emissions.shape[0],), emissions.dtype)
        state = ScoreAscentState(theta0, optimizer.init(theta0), path, jnp.zeros((), jnp.int32))
    elif not isinstance(state, ScoreAscentState):
        raise TypeError("state must be a ScoreAscentState (result.state of a previous run) or None.")
    elif estimator == "ppg":
        validate_reference(state.frozen_path, emissions.shape[0], "state.frozen_path")
    trainable = _theta_trainable(state.theta, frozen)

    args = (fk, SameFunction(params_fn), optimizer, emissions, num_particles, estimator, num_backward, backward)
    args += (inputs, mask, trainable)
    state, (thetas, scores, lls) = run_chunked(
        _sweep,
        state,
        k_run,
        k,
        args=args,
        chunk_size=chunk_size,
        progress=progress,
        desc=f"score ascent ({estimator})",
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )
    avg = jax.tree.map(lambda v: np.mean(v[k // 2 :], axis=0), thetas)
    return ScoreAscentResult(state.theta, avg, thetas, scores, lls, state)


@to_arviz.register(ScoreAscentResult)
def _score_ascent_to_arviz(result: ScoreAscentResult) -> az.InferenceData:
    """The θ trace as one chain (``posterior``, draw = iteration; leaves named by pytree path, ``theta`` for a bare
    array) and ``sample_stats``: ``log_likelihood`` estimates.  Not posterior draws: a trace for plots."""
    import arviz as az

    post, dims = {}, {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(result.theta_trace)[0]:
        name = path_name(path) or "theta"
        post[name] = np.asarray(leaf)[None]
        dims[name] = [f"{name}_dim_{i}" for i in range(post[name].ndim - 2)]
    stats = {"log_likelihood_estimate": np.asarray(result.log_likelihood_trace)[None]}
    return az.from_dict(posterior=post, sample_stats=stats, dims=dims)
