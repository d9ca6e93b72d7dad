"""Expectation–maximisation for every discrete-state model built from components (the one EM driver).

E-step: exact forward-backward on every sequence (``vmap``), giving :math:`\\gamma_{b,t}(s)` and expected
transition counts :math:`\\xi`.  M-step: each component's own weighted update — initial (:math:`\\gamma_0`),
transitions (:math:`\\xi`, plus :math:`\\gamma_0` when the initial distribution is stationary), emissions
(weights :math:`\\gamma`, optimiser state and a key for iterative or sampled M-steps).  Frozen leaves
(:func:`pssm.params.freeze`, or ``frozen=`` here) are put back bit for bit after every M-step.

The objective is :math:`\\log p(y \\mid \\theta) + \\log p(\\theta)` with ``model.log_prior`` (the same prior
the NumPyro bridge uses); ``log_objective[i]`` is its value at the params *entering* iteration ``i``.  Each
iteration is one jitted function traced once per model/data shape; the Python loop gives a progress bar, traces,
a convergence test and resumability (pass ``result.params`` back in).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from pssm.arviz import summary_group, to_arviz
from pssm.boundary import as_model_data, is_single_sequence, unbatch
from pssm.checkpoint import load_checkpoint, resume_metadata, save_checkpoint
from pssm.data import Sequences
from pssm.inference.chunked import run_fingerprint
from pssm.inference.exact.discrete import posterior_batch
from pssm.inference.exact.forward_backward import HMMPosterior
from pssm.params import freeze, trainable_mask
from pssm.protocol import PyTree

__all__ = ["EMResult", "EMState", "em_init", "em_step", "fit_em", "fit_em_restarts", "resolve_spec"]


class EMState(NamedTuple):
    params: PyTree
    m_step_state: PyTree


class EMInfo(NamedTuple):
    log_likelihood: Float[Array, ""]
    log_objective: Float[Array, ""]
    posterior: HMMPosterior | None = None
    """The E-step's batched forward-backward at the params entering the step."""


class EMResult(NamedTuple):
    params: PyTree
    log_likelihoods: Float[Array, " iters"]
    """Marginal log-likelihood of all sequences at the params *entering* each iteration."""
    log_objective: Float[Array, " iters"]
    """Log-likelihood + log prior (what EM increases)."""
    converged: bool
    num_iters: int
    posterior: HMMPosterior | None = None
    """Batched forward-backward at the final params."""
    seconds_per_iter: float = float("nan")
    m_step_state: PyTree = None
    model: Any = None
    """The fitted model (for :meth:`most_likely_states`)."""
    data: Any = None
    """The prepared data it was fitted to."""
    single: bool = False
    """True when fitted to one array ``(T, ...)``: ``posterior`` and the decoded path have no sequence axis."""

    def __repr__(self) -> str:
        ll = float(self.log_objective[-1]) if len(self.log_objective) else float("nan")
        return (
            f"EMResult(num_iters={self.num_iters}, converged={self.converged}, final_objective={ll:.6g}, "
            f"seconds_per_iter={self.seconds_per_iter:.3g}, model={type(self.model).__name__})"
        )

    def most_likely_states(self) -> Any:
        """Viterbi path(s) of the fitted data at the fitted params: ``(T,)`` for one sequence, else ``(B, T)``."""
        from pssm.inference.exact.discrete import _viterbi

        if self.model is None or self.data is None:
            raise ValueError("this EMResult has no model/data (built by hand); use pssm.inference.most_likely_states.")
        from pssm.jit import runtime_checks

        with runtime_checks("EMResult.most_likely_states"):
            path = _viterbi(self.model, self.params, self.data)
        return path[0] if self.single else path


def resolve_spec(model, frozen: Sequence[str] | None):
    """The model's params spec with the dotted paths in ``frozen`` made non-trainable."""
    spec = model.param_spec()
    return freeze(spec, *frozen) if frozen else spec


def _components(model):
    for name in ("initial_component", "transition_component", "emission_component"):
        if not hasattr(model, name):
            raise TypeError(
                f"fit_em needs a component-built discrete-state model (HMM and its families); "
                f"{type(model).__name__} has no {name}."
            )


def em_init(model, params: PyTree) -> EMState:
    """Kernel state: params and the emission component's M-step state (optimiser state)."""
    return EMState(params, model.emission_component.m_step_init(params.emissions))


def em_step(
    key: PRNGKeyArray, state: EMState, model, data: Sequences, trainable: PyTree, update: Any = True
) -> tuple[EMState, EMInfo]:
    """One EM iteration on prepared ``data`` (see :func:`pssm.boundary.as_model_data`); ``trainable`` is the
    pytree of Python bools from :func:`pssm.params.trainable_mask` (static: hashed by value, so the step is traced
    once per model, data shape and frozen set).  ``update``: a bool (traced or not); where false only the E-step
    runs and ``state`` comes back unchanged (the fit's final posterior, from the same compiled program)."""
    params = state.params
    post = posterior_batch(model, params, data)
    ll = post.log_likelihood.sum()
    obj = ll + model.log_prior(params)
    info = EMInfo(ll, obj, post)
    if update is True:
        return _m_update(key, state, model, data, trainable, post), info
    return jax.lax.cond(update, lambda: _m_update(key, state, model, data, trainable, post), lambda: state), info


def _m_update(key, state: EMState, model, data: Sequences, trainable: PyTree, post) -> EMState:
    """The M-step of :func:`em_step` from the E-step's posterior ``post``."""
    params = state.params
    gamma0 = post.smoothed_probs[:, 0].sum(0)
    xi = post.expected_transitions.sum(0)
    init_c, trans_c, emit_c = model.initial_component, model.transition_component, model.emission_component
    new_init = init_c.m_step(params.initial, gamma0)
    stationary = gamma0 if init_c.kind == "stationary" else None
    new_trans = trans_c.m_step(params.transitions, xi, stationary)
    weights = post.smoothed_probs * data.mask[..., None]
    new_em, m_state = emit_c.m_step(params.emissions, data, weights, state.m_step_state, key)
    new = type(params)(new_init, new_trans, new_em)
    new = jax.tree.map(lambda a, b: jnp.asarray(a, jnp.result_type(b)), new, params)
    new = jax.tree.map(lambda m, a, b: a if m else b, trainable, new, params)
    if not all(jax.tree.leaves(trainable.emissions)):
        # some emission leaves are frozen: the component's update of the others assumed they moved, so keep it
        # only if it raises the emission part of the objective (a generalised M-step: EM stays monotone)
        def q(em):
            ll_t = jax.vmap(lambda y, u: emit_c.log_likelihoods(em, y, u))(data.emissions, data.inputs)
            return jnp.sum(jnp.where(weights > 0, weights * ll_t, 0.0)) + emit_c.log_prior(em, model.num_states)

        better = q(new.emissions) >= q(params.emissions)
        new = new._replace(
            emissions=jax.tree.map(lambda a, b: jnp.where(better, a, b), new.emissions, params.emissions)
        )
    return EMState(new, m_state)


@eqx.filter_jit
def _em_step_jit(key, state, model, data, trainable, update):
    return em_step(key, state, model, data, trainable, update)


@eqx.filter_jit
def _posterior_jit(model, params, data):
    return posterior_batch(model, params, data)


def fit_em(
    key: PRNGKeyArray,
    model,
    params: PyTree,
    data: Any,
    *,
    inputs: PyTree = None,
    lengths: Any = None,
    num_iters: int = 100,
    tol: float = 1e-6,
    min_iters: int = 1,
    frozen: Sequence[str] = (),
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
) -> EMResult:
    """Fit a component-built discrete-state model by EM (MAP under ``model.log_prior``).

    ``data``: one sequence, a padded batch, a list of ragged sequences or a :class:`~pssm.data.Sequences`
    (checked against ``model.emission_shape``).  ``key`` drives sampled or stochastic M-steps.  Stops after
    ``num_iters`` iterations or when ``|obj_i - obj_{i-1}| <= tol (|obj_{i-1}| + 1)`` past ``min_iters`` (and past
    the emission component's ``stochastic_m_steps``, whose sampled objectives are noisy).
    ``lengths`` marks padding of a padded batch.  ``frozen``: dotted params paths held fixed (e.g.
    ``["initial", "emissions.covs"]``).  ``checkpoint``: a file the run is saved to every ``checkpoint_every``
    iterations and at the end, and resumed from when it exists (same key, params, data and settings), ending
    exactly as an uninterrupted run.
    """
    _components(model)
    model.check_params(params)
    result = _fit_prepared(
        key,
        model,
        params,
        as_model_data(model, data, inputs, lengths=lengths),
        num_iters=num_iters,
        tol=tol,
        min_iters=min_iters,
        frozen=frozen,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )
    return _as_single(result) if is_single_sequence(model, data) else result


def _as_single(result: EMResult) -> EMResult:
    return result._replace(posterior=unbatch(result.posterior), single=True)


def _fit_prepared(
    key,
    model,
    params,
    data,
    *,
    num_iters=100,
    tol=1e-6,
    min_iters=1,
    frozen=(),
    progress=False,
    checkpoint=None,
    checkpoint_every=10,
):
    from pssm.validation import check_key, check_positive_int

    check_key(key)
    num_iters = check_positive_int(num_iters, "num_iters")
    min_iters = check_positive_int(min_iters, "min_iters", minimum=0)
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    tol = _check_tol(tol)
    frozen = (frozen,) if isinstance(frozen, str) else tuple(frozen)
    trainable = trainable_mask(resolve_spec(model, frozen))
    ftype = jnp.result_type(float)
    params = jax.tree.map(
        lambda a: jnp.asarray(a, ftype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a, params
    )
    state = em_init(model, params)
    run = _Run(key, state, [], [], [], 0, False)
    if checkpoint is not None:
        config = {"num_iters": num_iters, "tol": tol, "min_iters": min_iters, "frozen": list(frozen)}
        config["run"] = run_fingerprint(key, params, data, type(model).__name__)
        run = _resume_em(Path(checkpoint), config, run)
    key, state, lls, objs, times, converged = run.key, run.state, run.lls, run.objs, run.times, run.converged
    from tqdm.auto import tqdm

    name = type(model.emission_component).__name__
    # sampled M-steps make the objective noisy: judge convergence only from the first deterministic one on
    warmup = model.emission_component.stochastic_m_steps + 1
    it = tqdm(total=num_iters, initial=run.start, desc=f"EM {name}", disable=not progress)
    post = None  # the posterior at state.params, when an iteration has computed it
    update, e_step_only = jnp.asarray(True), jnp.asarray(False)
    for i in range(run.start, 0 if converged else num_iters):
        key, sub = jax.random.split(key)
        t0 = time.perf_counter()
        new_state, info = _em_step_jit(sub, state, model, data, trainable, update)
        ll, obj = float(info.log_likelihood), float(info.log_objective)
        times.append(time.perf_counter() - t0)
        if not np.isfinite(obj):
            _explain_nonfinite(model, state.params, data, ll, obj, i)
        lls.append(ll)
        objs.append(obj)
        it.update()
        it.set_postfix(objective=f"{obj:.4g}")
        if i >= max(min_iters, warmup, 1) and abs(objs[-1] - objs[-2]) <= tol * (abs(objs[-2]) + 1.0):
            converged = True
            post = info.posterior  # this iteration's E-step ran at state.params
            break
        state = new_state
        if checkpoint is not None and (i + 1) % checkpoint_every == 0 and i + 1 < num_iters:
            _save_em(checkpoint, config, _Run(key, state, lls, objs, times, i + 1, False))
    it.close()
    if checkpoint is not None:
        _save_em(checkpoint, config, _Run(key, state, lls, objs, times, len(lls), converged))
    if post is None and len(lls) > run.start:  # the E-step at the final params, in the step already compiled
        post = _em_step_jit(key, state, model, data, trainable, e_step_only)[1].posterior
    elif post is None:  # a finished run read back from its checkpoint
        post = _posterior_jit(model, state.params, data)
    spi = float(np.median(times[1:])) if len(times) > 1 else float(times[0])
    return EMResult(
        state.params,
        jnp.asarray(lls),
        jnp.asarray(objs),
        converged,
        len(lls),
        post,
        spi,
        state.m_step_state,
        model,
        data,
    )


class _Run(NamedTuple):
    """An EM run between iterations: the key and state entering iteration ``start``, the traces so far."""

    key: Any
    state: EMState
    lls: list
    objs: list
    times: list
    start: int
    converged: bool


def _save_em(path, config: dict, run: _Run) -> None:
    traces = tuple(np.asarray(v, np.float64) for v in (run.lls, run.objs, run.times))
    save_checkpoint(path, (run.key, run.state, traces), start=run.start, converged=run.converged, config=config)


def _resume_em(path: Path, config: dict, run: _Run) -> _Run:
    """The run saved at ``path`` (the fresh ``run`` when there is none); another run's file is refused."""
    meta = resume_metadata(path, config, "EM checkpoint")
    if meta is None:
        return run
    n = int(meta["start"])
    template = (run.key, run.state, tuple(np.zeros(n, np.float64) for _ in range(3)))
    (key, state, traces), _ = load_checkpoint(path, template)
    lls, objs, times = (list(map(float, t)) for t in traces)
    return _Run(key, state, lls, objs, times, n, bool(meta["converged"]))


def _check_tol(tol: Any) -> float:
    """EM's relative convergence tolerance: a finite real number >= 0 (0 runs all ``num_iters`` iterations)."""
    from pssm.validation import check_real

    check_real(tol, "tol", low=0.0, low_inclusive=True, fix="Use e.g. tol=1e-6 (or tol=0 to run all num_iters).")
    return float(tol)


def _explain_nonfinite(model, params, data, ll, obj, i):
    lp = float(model.log_prior(params))
    if not np.isfinite(lp):
        raise FloatingPointError(
            f"EM: log prior is {lp} at iteration {i} (log-likelihood {ll}); a parameter lies where the prior has "
            "no mass (e.g. a zero transition probability under a Dirichlet concentration > 1). Relax the prior or "
            "move the initial params inside its support."
        )
    raise FloatingPointError(
        f"EM: log-likelihood is {ll} at iteration {i}; some observation is impossible under the params (e.g. a "
        "zero rate with a positive count, a class of probability zero). Check the initial params."
    )


def fit_em_restarts(
    key: PRNGKeyArray,
    model,
    data: Any,
    *,
    inputs: PyTree = None,
    lengths: Any = None,
    num_restarts: int = 5,
    **options: Any,
) -> tuple[EMResult, list[EMResult]]:
    """EM from ``num_restarts`` initialisations ``model.initialize(key, data)``; ``(best, all)`` by objective.

    ``options`` are :func:`fit_em`'s; with ``checkpoint=path`` restart ``r`` is saved to ``path.restart{r}``, so a
    killed run resumes in the restart it was in (finished restarts are read back, not run again)."""
    from pssm.validation import check_positive_int

    _components(model)
    from pssm.validation import check_key

    check_key(key)
    num_restarts = check_positive_int(num_restarts, "num_restarts")
    prepared = as_model_data(model, data, inputs, lengths=lengths)
    checkpoint = options.pop("checkpoint", None)
    results = []
    for r, k in enumerate(jax.random.split(key, num_restarts)):
        ki, ke = jax.random.split(k)
        file = None if checkpoint is None else f"{os.fspath(checkpoint)}.restart{r}"
        results.append(_fit_prepared(ke, model, model.initialize(ki, prepared), prepared, checkpoint=file, **options))
    if is_single_sequence(model, data):
        results = [_as_single(r) for r in results]
    best = max(results, key=lambda r: float(r.log_objective[-1]))
    return best, results


@to_arviz.register(EMResult)
def _em_to_arviz(result: EMResult, *, model=None) -> Any:
    """EM point estimates (one draw) + smoothed state probabilities; traces in ``sample_stats``."""
    from pssm.params import leaf_names

    names = leaf_names(result.params)
    leaves = jax.tree.leaves(result.params)
    post = {n: np.asarray(v) for n, v in zip(names, leaves, strict=True)}
    dims = {}
    if result.posterior is not None:
        post["smoothed_probs"] = np.asarray(result.posterior.smoothed_probs)
        dims["smoothed_probs"] = ["time", "state"] if result.single else ["sequence", "time", "state"]
    dims["em_log_likelihood"] = ["em_iteration"]
    dims["em_log_objective"] = ["em_iteration"]
    return summary_group(
        post,
        dims,
        {},
        sample_stats={"em_log_likelihood": result.log_likelihoods, "em_log_objective": result.log_objective},
    )
