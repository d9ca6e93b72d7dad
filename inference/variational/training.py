"""Training deep VAE state-space models with NumPyro SVI: minibatches, KL annealing, clipping, checkpoints.

``fit_vae`` runs :class:`numpyro.infer.SVI` on the NumPyro programs of
:mod:`~pssm.inference.variational.numpyro_vae` with one of three objectives: ``'elbo'`` (NumPyro's
``Trace_ELBO``), ``'iwae'`` or ``'fivo'`` (:class:`ParticleBound`, a NumPyro ELBO whose value is the bound of
:mod:`~pssm.inference.variational.bounds`).  Each epoch visits the training sequences in a fresh order drawn from
``fold_in(key, epoch)`` in minibatches of ``batch_size``, each padded to its longest sequence rounded up to a multiple
of
``pad_multiple`` steps (fewer than ``pad_multiple`` wasted steps; one compiled shape per multiple seen, so a larger
``pad_multiple`` compiles less), and a short last minibatch is filled with empty sequences.  The loss of a minibatch is
the negative bound summed over its sequences (Pyro's DMM
convention); KL annealing :math:`\\beta` rises linearly per minibatch from ``min_annealing`` to 1 over
``annealing_epochs``.  The default optimiser mirrors Pyro's ``ClippedAdam``: element-wise gradient clipping,
L2 weight decay, Adam, and a learning rate decaying by ``lr_decay`` each step.

With ``checkpoint=path`` the whole SVI state (params, optimiser, PRNG key) and the histories are written every
``checkpoint_every`` epochs (atomically); a call with the same arguments resumes from it, and the resumed run
ends with exactly the result of an uninterrupted one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray
from numpyro.distributions.transforms import IdentityTransform
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.elbo import ELBO
from numpyro.infer.svi import SVIState
from numpyro.infer.util import transform_fn
from numpyro.optim import optax_to_numpyro

from pssm.arviz import summary_group, to_arviz
from pssm.boundary import as_sequences
from pssm.checkpoint import load_checkpoint, save_checkpoint
from pssm.data import Sequences
from pssm.display import short_repr
from pssm.inference.variational.bounds import path_log_weight, sequence_bound
from pssm.inference.variational.numpyro_vae import (
    GUIDE_SITE,
    MODEL_SITE,
    FlatModule,
    make_vae_guide,
    make_vae_model,
)
from pssm.protocol import PyTree
from pssm.validation import check_key, check_positive_int

__all__ = ["VAEResult", "ParticleBound", "fit_vae", "evaluate_bound", "clipped_adam", "BOUNDS"]

BOUNDS = ("elbo", "iwae", "fivo")


class VAEResult(NamedTuple):
    """Trained model and guide params, per-epoch histories (loss = negative annealed bound per time step;
    ``validation`` = negative held-out bound per step, NaN where not evaluated) and the settings used.  With early
    stopping (``patience``) the histories end at the epoch the run stopped and the params are those of
    ``best_epoch`` (0-based), the epoch of the lowest validation bound; otherwise ``best_epoch`` is ``None`` and the
    params are the last epoch's."""

    params: PyTree
    guide_params: PyTree
    losses: Float[Array, " epochs"]
    validation: Float[Array, " epochs"]
    annealing: Float[Array, " epochs"]
    epoch_seconds: Float[Array, " epochs"]
    bound: str
    num_samples: int
    best_epoch: int | None = None

    __repr__ = short_repr


@functools.lru_cache(maxsize=64)
def clipped_adam(
    learning_rate: float = 3e-4,
    *,
    b1: float = 0.96,
    b2: float = 0.999,
    clip: float = 10.0,
    weight_decay: float = 0.0,
    lr_decay: float = 1.0,
) -> optax.GradientTransformation:
    """Pyro's ``ClippedAdam`` in optax: clip each gradient entry to ``[-clip, clip]``, add
    ``weight_decay * param``, Adam, learning rate ``learning_rate * lr_decay**(step + 1)``."""
    # Pyro decays before each step: step k (from 0) uses learning_rate * lr_decay**(k + 1)
    schedule = optax.exponential_decay(learning_rate * lr_decay, 1, lr_decay) if lr_decay != 1.0 else learning_rate
    return optax.chain(
        optax.clip(clip),
        optax.add_decayed_weights(weight_decay) if weight_decay else optax.identity(),
        optax.scale_by_adam(b1=b1, b2=b2),
        optax.scale_by_learning_rate(schedule),
    )


class ParticleBound(ELBO):
    """A NumPyro ELBO whose loss is minus the ELBO, IWAE or FIVO bound of each minibatch sequence, summed (from
    :func:`~pssm.inference.variational.bounds.sequence_bound`)."""

    def __init__(self, model, params, guide, guide_params, bound: str, num_samples: int, *, fixed=None):
        super().__init__(num_particles=1)
        if bound not in BOUNDS:
            raise ValueError(f"bound must be one of {BOUNDS}; got {bound!r}.")
        self.model, self.guide, self.bound, self.num_samples = model, guide, bound, int(num_samples)
        self._model_flat, self._guide_flat = FlatModule(params), FlatModule(guide_params)
        self._fixed = fixed  # model params held fixed (amortised smoothing), or None: trained

    def loss(self, rng_key, param_map, model, guide, emissions, valid, observed, annealing=1.0):
        p = self._model_flat.unflatten(param_map[MODEL_SITE]) if self._fixed is None else self._fixed
        g = self._guide_flat.unflatten(param_map[GUIDE_SITE])
        beta = 1.0 if self.bound == "fivo" else annealing
        keys = jax.random.split(rng_key, emissions.shape[0])

        def one(k, e, v, o):
            return sequence_bound(
                k,
                self.model,
                p,
                self.guide,
                g,
                e,
                v,
                o,
                bound=self.bound,
                num_samples=self.num_samples,
                annealing=beta,
            )

        return -jnp.sum(jax.vmap(one)(keys, emissions, valid, observed))


def _valid(seqs: Sequences) -> np.ndarray:
    T = seqs.emissions.shape[1]
    return np.arange(T)[None, :] < np.asarray(seqs.lengths)[:, None]


def _host_arrays(model, data, name: str = "data") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(emissions, valid, observed)`` as host arrays ``(B, T, ...)``, ``(B, T)``, ``(B, T)`` from anything the
    boundary accepts (counts and binary data as floats)."""
    seqs = as_sequences(model, data, name=name)
    emissions = np.array(seqs.emissions, dtype=np.float32 if seqs.emissions.dtype != np.float64 else None)
    if seqs.observed is not None:  # the missing entries of a partly observed step: NaN (observed_log_prob)
        emissions[~np.asarray(seqs.entries) & np.asarray(seqs.mask)[..., None]] = np.nan
    valid = _valid(seqs)
    return emissions, valid, np.asarray(seqs.mask) & valid


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _bucket(t_max: int, t_all: int, pad_multiple: int) -> int:
    """Padded length: ``t_max`` rounded up to a multiple of ``pad_multiple`` (fewer than ``pad_multiple`` padded
    steps; at most ``t_all / pad_multiple`` compiled shapes)."""
    return min(-(-t_max // pad_multiple), -(-t_all // pad_multiple)) * pad_multiple


def _padded(emissions, valid, observed, idx, pad_multiple, batch_size):
    """A minibatch ``(B, T_bucket, ...)``; a short last batch is filled with empty (all-invalid) sequences, which
    contribute nothing, so every minibatch has ``batch_size`` rows."""
    T = _bucket(int(valid[idx].sum(1).max()), emissions.shape[1], pad_multiple)
    T_have = emissions.shape[1]
    pad_b = batch_size - len(idx)

    def take(a, fill):
        x = a[idx, : min(T, T_have)]
        if T > T_have:
            x = np.concatenate([x, np.full((x.shape[0], T - T_have) + x.shape[2:], fill, x.dtype)], axis=1)
        if pad_b:
            x = np.concatenate([x, np.full((pad_b,) + x.shape[1:], fill, x.dtype)], axis=0)
        return jnp.asarray(x)

    return take(emissions, 0), take(valid, False), take(observed, False)


def _annealing(epoch, batch, num_batches, annealing_epochs, min_annealing) -> float:
    if annealing_epochs <= 0 or epoch >= annealing_epochs:
        return 1.0
    frac = (batch + epoch * num_batches + 1) / (annealing_epochs * num_batches)
    return float(min_annealing + (1.0 - min_annealing) * frac)


def fit_vae(
    key: PRNGKeyArray,
    model,
    params: PyTree,
    data: Any,
    *,
    guide,
    guide_params: PyTree,
    num_epochs: int,
    batch_size: int = 20,
    bound: Literal["elbo", "iwae", "fivo"] = "elbo",
    num_samples: int = 1,
    optimizer: optax.GradientTransformation | None = None,
    annealing_epochs: int = 0,
    min_annealing: float = 0.2,
    validation_data: Any = None,
    eval_every: int = 0,
    eval_samples: int = 1,
    eval_bound: Literal["elbo", "iwae", "fivo"] = "elbo",
    patience: int = 0,
    min_delta: float = 0.0,
    pad_multiple: int = 16,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1,
    progress: bool = False,
    callback: Callable[[int, float], None] | None = None,
    train_model: bool = True,
) -> VAEResult:
    """Fit a deep Markov ``model`` and its ``guide`` (an :class:`~pssm.models.deep.Encoder`) to ``data`` (anything
    :func:`pssm.boundary.as_sequences` accepts: a list of ``(T_b, D)`` arrays, a padded batch or a
    :class:`~pssm.data.Sequences`) by SVI on the chosen ``bound`` with ``num_samples`` samples/particles.

    ``optimizer`` defaults to :func:`clipped_adam` ``(3e-4)``.  Every ``eval_every`` epochs (0: never) the
    negative ``validation_data`` bound per step (``eval_bound`` with ``eval_samples``) is recorded, with the same
    key at every evaluation (common random numbers).  Early stopping:
    with ``patience > 0`` the run stops once ``patience`` epochs have passed without the validation bound improving
    on its best by more than ``min_delta`` (nats per step), and returns the params of the best epoch.
    ``callback(epoch, loss)`` runs after each epoch (after its checkpoint); an exception it raises stops the run
    there.

    Any continuous-state SSM with a vector latent works (its ``params`` then need not hold networks): with
    ``train_model=False`` the model's params stay fixed and only the guide is fitted — amortised variational
    smoothing (e.g. on a :class:`~pssm.models.LinearGaussianSSM`, against RTS).  NumPyro's ``Trace_ELBO`` on the
    NumPyro programs is used for a trainable deep Markov model; otherwise the same bound comes from
    :func:`~pssm.inference.variational.bounds.sequence_bound`.
    """
    check_key(key)
    num_epochs = check_positive_int(num_epochs, "num_epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    num_samples = check_positive_int(num_samples, "num_samples")
    pad_multiple = check_positive_int(pad_multiple, "pad_multiple")
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}; got {bound!r}.")
    if bound == "fivo" and annealing_epochs:
        raise ValueError("bound='fivo' has no KL annealing; pass annealing_epochs=0.")
    if not 0.0 < float(min_annealing) <= 1.0:
        raise ValueError(f"min_annealing must lie in (0, 1]; got {min_annealing}.")
    dims = _model_dims(model)
    if (guide.latent_dim, guide.emission_dim) != dims:
        raise ValueError(
            f"guide has latent_dim={guide.latent_dim}, emission_dim={guide.emission_dim} but the model has "
            f"{dims[0]}, {dims[1]}; build Encoder({dims[0]}, {dims[1]}) to match."
        )
    if model.discrete_states:
        raise TypeError(f"fit_vae needs a continuous-state model; {type(model).__name__} has discrete states.")
    # NumPyro's Trace_ELBO on the NumPyro programs for a trainable deep Markov model; otherwise the pure bound
    pure = not (train_model and _is_dmm(model))
    if eval_every and validation_data is None:
        raise ValueError("eval_every > 0 needs validation_data.")
    if eval_bound not in BOUNDS:
        raise ValueError(f"eval_bound must be one of {BOUNDS}; got {eval_bound!r}.")
    if int(patience) < 0 or (patience and not eval_every):
        raise ValueError(
            f"patience={patience}: early stopping needs patience >= 0, and patience > 0 needs eval_every > 0 with "
            "validation_data (the bound it watches)."
        )
    if not float(min_delta) >= 0.0:
        raise ValueError(f"min_delta must be >= 0 (nats per step); got {min_delta}.")
    emissions, valid, observed = _host_arrays(model, data)
    val = as_sequences(model, validation_data, name="validation_data") if validation_data is not None else None

    optimizer = optimizer if optimizer is not None else clipped_adam()
    k_init, k_order, k_eval = jax.random.split(key, 3)
    n = emissions.shape[0]
    state = _initial_state(k_init, params, guide_params, optimizer)
    hist = {name: np.full(num_epochs, np.nan) for name in ("losses", "validation", "annealing", "seconds")}
    start = 0
    config = {
        "num_epochs": num_epochs,
        "batch_size": batch_size,
        "bound": bound,
        "num_samples": num_samples,
        "annealing_epochs": int(annealing_epochs),
        "num_sequences": int(n),
        "train_model": bool(train_model),
        "patience": int(patience),
        "min_delta": float(min_delta),
        "eval_every": int(eval_every),
        "eval_bound": eval_bound,
    }
    # early stopping: the flat params of the best validated epoch, its value and epoch (checkpointed with the rest)
    best = {"flat": _flat_params(state, optimizer), "value": np.full(1, np.inf), "epoch": np.full(1, -1)}
    stopped = False
    if checkpoint is not None and Path(checkpoint).exists():
        (state, hist, best), meta = load_checkpoint(checkpoint, (state, hist, best))
        if meta.get("config") != config:
            raise ValueError(
                f"checkpoint {checkpoint} was written with {meta.get('config')}; this call has {config}. Use the "
                "same settings to resume, or another checkpoint path."
            )
        start, stopped = int(meta["epoch"]), bool(meta.get("stopped", False))
    fixed = None if train_model else params
    static = (model, guide, optimizer, bound, num_samples, pure, fixed is not None)
    steps = int(valid.sum())
    epochs = range(start, start if stopped else num_epochs)
    last = start
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, total=num_epochs, initial=start, desc=f"fit_vae ({bound})")
    for epoch in epochs:
        order = np.asarray(jax.random.permutation(jax.random.fold_in(k_order, epoch), n))
        batches = _batches(order, batch_size)
        t0 = time.perf_counter()
        total, beta = 0.0, 1.0
        for b, idx in enumerate(batches):
            beta = _annealing(epoch, b, len(batches), annealing_epochs, float(min_annealing))
            batch = _padded(emissions, valid, observed, idx, pad_multiple, batch_size)
            state, value = _svi_update(state, *batch, jnp.asarray(beta, batch[0].dtype), params, guide_params, static)
            if not np.isfinite(float(value)):
                raise FloatingPointError(
                    f"fit_vae: the {bound} loss became {float(value)} at epoch {epoch}, minibatch {b}; the networks "
                    "diverged. Lower the learning rate, add weight decay (clipped_adam(weight_decay=...)) or "
                    "anneal longer; a checkpoint, if any, holds the last finite epoch."
                )
            total += float(value)
        hist["seconds"][epoch] = time.perf_counter() - t0
        hist["losses"][epoch] = total / steps
        hist["annealing"][epoch] = beta
        if eval_every and (epoch + 1) % eval_every == 0:
            p, g = _trained(state, params, guide_params, optimizer)
            hist["validation"][epoch] = evaluate_bound(
                k_eval,  # the same key every epoch: changes of the bound are the params', not Monte Carlo noise
                model,
                p,
                val,
                guide=guide,
                guide_params=g,
                bound=eval_bound,
                num_samples=eval_samples,
            )
            if hist["validation"][epoch] < best["value"][0] - float(min_delta):
                best = {"flat": _flat_params(state, optimizer), "value": hist["validation"][epoch : epoch + 1].copy()}
                best["epoch"] = np.full(1, epoch)
            stopped = bool(patience) and epoch - int(best["epoch"][0]) >= int(patience)
        last = epoch + 1
        if progress:
            epochs.set_postfix(loss=f"{hist['losses'][epoch]:.3f}", valid=f"{hist['validation'][epoch]:.3f}")
        if checkpoint is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == num_epochs or stopped):
            save_checkpoint(checkpoint, (state, hist, best), epoch=epoch + 1, config=config, stopped=stopped)
        if callback is not None:
            callback(epoch, float(hist["losses"][epoch]))
        if stopped:
            break
    if patience:
        flat = best["flat"] if int(best["epoch"][0]) >= 0 else _flat_params(state, optimizer)
        p, g = FlatModule(params).unflatten(flat[MODEL_SITE]), FlatModule(guide_params).unflatten(flat[GUIDE_SITE])
        end, best_epoch = (last if stopped else num_epochs), int(best["epoch"][0])
    else:
        p, g = _trained(state, params, guide_params, optimizer)
        end, best_epoch = num_epochs, None
    p = p if train_model else params
    return VAEResult(
        p,
        g,
        *(jnp.asarray(hist[k][:end]) for k in ("losses", "validation", "annealing", "seconds")),
        bound,
        num_samples,
        best_epoch,
    )


def _make_svi(model, params, guide, guide_params, optimizer, bound, num_samples, pure, fixed) -> SVI:
    # NumPyro's Trace_ELBO for the plain guide; with flow steps the guide's samples carry intermediates that
    # NumPyro 0.22's scan does not stack, so the same ELBO comes from the pure bound instead
    loss = (
        Trace_ELBO(num_particles=num_samples)
        if bound == "elbo" and not getattr(guide, "num_flows", 0) and not pure
        else ParticleBound(model, params, guide, guide_params, bound, num_samples, fixed=params if fixed else None)
    )
    svi = SVI(make_vae_model(model, params), make_vae_guide(guide, guide_params), optimizer, loss)
    # what SVI.init would set: both param sites are unconstrained
    identity = {MODEL_SITE: IdentityTransform(), GUIDE_SITE: IdentityTransform()}
    svi.constrain_fn = functools.partial(transform_fn, identity)
    return svi


def _initial_state(key, params, guide_params, optimizer) -> SVIState:
    flat = {MODEL_SITE: FlatModule(params).flat, GUIDE_SITE: FlatModule(guide_params).flat}
    return SVIState(optax_to_numpyro(optimizer).init(flat), None, key)


@eqx.filter_jit
def _svi_update(state, emissions, valid, observed, beta, params, guide_params, static):
    """One SVI step, compiled once per (static settings, shapes) across calls of :func:`fit_vae`."""
    model, guide, optimizer, bound, num_samples, pure, fixed = static
    svi = _make_svi(model, params, guide, guide_params, optimizer, bound, num_samples, pure, fixed)
    return svi.update(state, emissions, valid, observed, beta)


def _model_dims(model) -> tuple[int | None, int | None]:
    """``(latent_dim, emission_dim)`` of a model with vector latents and observations."""
    latent = getattr(model, "latent_dim", getattr(model, "state_dim", None))
    shape = tuple(model.emission_shape)
    return latent, (shape[0] if len(shape) == 1 else None)


def _is_dmm(model) -> bool:
    from pssm.models.deep.dmm import DeepMarkovModel

    return isinstance(model, DeepMarkovModel)


def _flat_params(state, optimizer) -> dict:
    """The SVI state's ravelled param sites ``{MODEL_SITE: ..., GUIDE_SITE: ...}``."""
    return dict(optax_to_numpyro(optimizer).get_params(state.optim_state))


def _trained(state, params: PyTree, guide_params: PyTree, optimizer) -> tuple[PyTree, PyTree]:
    """The model and guide params of an SVI state (array leaves from the state, the rest from the templates)."""
    got = optax_to_numpyro(optimizer).get_params(state.optim_state)
    return FlatModule(params).unflatten(got[MODEL_SITE]), FlatModule(guide_params).unflatten(got[GUIDE_SITE])


@eqx.filter_jit
def _batch_bounds(keys, model, params, guide, guide_params, emissions, valid, observed, bound, num_samples):
    def one(k, e, v, o):
        return sequence_bound(k, model, params, guide, guide_params, e, v, o, bound=bound, num_samples=num_samples)

    return jax.vmap(one)(keys, emissions, valid, observed)


def evaluate_bound(
    key: PRNGKeyArray,
    model,
    params: PyTree,
    data: Any,
    *,
    guide,
    guide_params: PyTree,
    bound: Literal["elbo", "iwae", "fivo"] = "elbo",
    num_samples: int = 1,
    batch_size: int = 64,
    per_sequence: bool = False,
) -> float | np.ndarray:
    """Negative ``bound`` per time step on ``data`` (nats; lower is better): :math:`-\\sum_b \\mathcal L_b /
    \\sum_b T_b`.  With ``per_sequence=True`` the bounds :math:`\\mathcal L_b` themselves."""
    check_key(key)
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}; got {bound!r}.")
    num_samples = check_positive_int(num_samples, "num_samples")
    emissions, valid, observed = _host_arrays(model, data)
    n = emissions.shape[0]
    batch_size = min(check_positive_int(batch_size, "batch_size"), n)
    keys = jax.random.split(key, n)
    out = []
    keys = jnp.concatenate([keys, jax.random.split(jax.random.fold_in(key, 1), batch_size)])  # for filler rows
    for idx in _batches(np.arange(n), batch_size):
        e, v, o = _padded(emissions, valid, observed, idx, 16, batch_size)
        k = keys[np.concatenate([idx, n + np.arange(batch_size - len(idx))])]
        b = _batch_bounds(k, model, params, guide, guide_params, e, v, o, bound, num_samples)
        out.append(np.asarray(b)[: len(idx)])
    bounds = np.concatenate(out)
    return bounds if per_sequence else float(-bounds.sum() / valid.sum())


@to_arviz.register(VAEResult)
def _vae_to_arviz(
    result: VAEResult,
    *,
    key: PRNGKeyArray | None = None,
    model=None,
    guide=None,
    emissions: Array | None = None,
    num_samples: int = 100,
):
    """Without ``key``: the training histories over ``epoch`` in ``sample_stats`` (one draw) and the model's learned
    initial latent as the posterior.  With ``key``, ``model``, ``guide`` and one sequence ``emissions`` ``(T, D)``:
    ``num_samples`` guide paths ``z`` as the posterior (one chain) and their log-weights
    :math:`\\log p(y, z) - \\log q(z \\mid y)` in ``sample_stats``."""
    import arviz as az

    if key is None:
        stats = {
            "loss": np.asarray(result.losses),
            "validation": np.asarray(result.validation),
            "annealing": np.asarray(result.annealing),
            "epoch_seconds": np.asarray(result.epoch_seconds),
        }
        dims = {k: ["epoch"] for k in stats} | {"initial_latent": ["latent_dim"]}
        return summary_group({"initial_latent": np.asarray(result.params.initial_latent)}, dims, sample_stats=stats)
    if model is None or guide is None or emissions is None:
        raise ValueError("to_arviz(VAEResult, key=...) draws guide paths: pass model=, guide= and emissions= (T, D).")
    check_key(key)
    y = jnp.asarray(emissions)
    if y.ndim != 2:
        raise ValueError(f"emissions must be one sequence (T, D); got shape {y.shape}.")
    ones = jnp.ones(y.shape[0], bool)

    def draw(k):
        return path_log_weight(k, model, result.params, guide, result.guide_params, y, ones, ones)

    lw, z = jax.vmap(draw)(jax.random.split(key, int(num_samples)))
    return az.from_dict(
        posterior={"z": np.asarray(z)[None]},
        sample_stats={"log_weight": np.asarray(lw)[None]},
        dims={"z": ["time", "latent_dim"]},
    )
