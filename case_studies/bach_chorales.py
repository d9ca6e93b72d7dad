"""Bach chorales with a deep Markov model: ELBO- and FIVO-trained, held-out bounds, SMC smoothing.

Data: the 350 chorales of music21's corpus as 88-key quarter-note piano rolls (``pssm.datasets``; fixed
210/70/70 split, not the JSB pickle split).  Model: Pyro's DMM architecture (``DeepMarkovModel`` with a gated
transition and a Bernoulli emitter; backward-RNN ``Encoder`` with a combiner), trained by NumPyro SVI.

1. An **ELBO-trained** model (KL annealing, ClippedAdam-equivalent optimiser, minibatches of 20).
2. A **FIVO-trained** model (particle-filter bound with the encoder as proposal, ``fivo_particles`` particles;
   resampling gradients dropped as in FIVO).
3. Held-out bounds for both, as negative log-likelihood bounds in nats per time step (lower is better): ELBO,
   IWAE_K and FIVO_K for K in ``eval_k``; the bounds tighten with K and IWAE <= ELBO.
4. Latent smoothing of held-out chorales two ways: the amortised posterior (mean of guide draws) and the SMC
   engine (guided particle filter proposing from the encoder, PaRIS for the additive functional
   :math:`\\sum_t e_t \\otimes z_t`, i.e. all smoothed means at once); the guided filter's log-likelihood beside
   the bootstrap filter's at the same N.

Writes ``training_curves.png``, ``piano_rolls.png``, ``latent_smoothing.png``, ``arviz_summary.csv``,
``report.html`` and ``summary.json`` under ``--out``; the JSON is also the last printed line.  ``--quick``: small
networks, a subset of chorales, a few epochs (the test suite runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from pssm.data import Sequences
from pssm.datasets import load_bach_chorales
from pssm.inference.smc import AdditiveFunctional, paris, particle_filter
from pssm.inference.variational import clipped_adam, evaluate_bound, fit_vae, path_log_weight
from pssm.models.deep import DeepMarkovModel, Encoder

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes and training settings (defaults: Pyro's DMM example, with a shorter annealing schedule and a learning
    rate of 1e-3 instead of 3e-4, so that the bounds settle within an hour on one core; without its weight decay
    the ReLU RNN diverges within a few epochs at these learning rates).

    Training runs until the validation bound has settled: early stopping once ``patience`` epochs pass without
    the validation bound (same Monte Carlo key at every epoch) improving by more than ``min_delta`` nats per step
    (``epochs`` is only a cap); the params of the best validated epoch are returned.  The FIVO-trained model starts
    from the
    ELBO-trained one (``fivo_init='elbo'``; ``'scratch'`` trains it from the same initialisation) and is stopped on
    its validation FIVO bound with ``fivo_particles`` particles."""

    latent_dim: int = 100
    emitter_hidden: int = 100
    transition_hidden: int = 200
    rnn_hidden: int = 600
    epochs: int = 1000
    fivo_epochs: int = 300
    fivo_particles: int = 4
    patience: int = 25
    fivo_patience: int = 15
    min_delta: float = 0.005
    fivo_init: str = "elbo"
    batch_size: int = 20
    learning_rate: float = 1e-3
    weight_decay: float = 2.0
    lr_decay: float = 0.99996
    annealing_epochs: int = 20
    min_annealing: float = 0.2
    eval_k: tuple[int, ...] = (1, 4, 16)
    smoothing_particles: int = 256
    num_smoothed: int = 5
    max_train: int | None = None
    max_test: int | None = None
    max_length: int | None = None


QUICK = Config(
    latent_dim=8,
    emitter_hidden=16,
    transition_hidden=16,
    rnn_hidden=32,
    epochs=3,
    fivo_epochs=2,
    fivo_particles=2,
    patience=2,
    fivo_patience=2,
    eval_k=(1, 4),
    smoothing_particles=32,
    num_smoothed=2,
    max_train=40,
    max_test=12,
    max_length=64,
)


def subset(seqs: Sequences, n: int | None, max_length: int | None = None) -> Sequences:
    """The first ``n`` sequences (all when ``None``) of at most ``max_length`` steps, trimmed to their longest."""
    lengths = np.asarray(seqs.lengths)
    idx = np.flatnonzero(lengths <= (max_length or lengths.max()))[:n]
    if len(idx) == len(seqs):
        return seqs
    T = int(lengths[idx].max())
    return Sequences(seqs.emissions[idx, :T], seqs.mask[idx, :T], seqs.lengths[idx], None, seqs.kind)


def build(cfg: Config, key) -> tuple:
    model = DeepMarkovModel(cfg.latent_dim, 88, "bernoulli", cfg.emitter_hidden, cfg.transition_hidden)
    guide = Encoder(cfg.latent_dim, 88, hidden=cfg.rnn_hidden)
    k1, k2 = jax.random.split(key)
    return model, guide, model.init_params(k1), guide.init_params(k2)


def train(
    key, cfg: Config, data: dict, *, bound: str, start=None, checkpoint: Path | None = None, progress: bool = False
):
    """Train with early stopping on the validation bound (``bound`` itself); ``start``: ``(params, guide_params)``
    to begin from instead of a fresh initialisation."""
    model, guide, p0, g0 = build(cfg, jax.random.fold_in(key, 0))
    if start is not None:
        p0, g0 = start
    fivo = bound == "fivo"
    res = fit_vae(
        jax.random.fold_in(key, 1),
        model,
        p0,
        data["train"],
        guide=guide,
        guide_params=g0,
        num_epochs=cfg.fivo_epochs if fivo else cfg.epochs,
        batch_size=cfg.batch_size,
        bound=bound,
        num_samples=cfg.fivo_particles if fivo else 1,
        optimizer=clipped_adam(cfg.learning_rate, weight_decay=cfg.weight_decay, lr_decay=cfg.lr_decay),
        annealing_epochs=0 if fivo else cfg.annealing_epochs,
        min_annealing=cfg.min_annealing,
        validation_data=data["valid"],
        eval_every=1,
        eval_bound=bound,
        eval_samples=cfg.fivo_particles if fivo else 1,
        patience=cfg.fivo_patience if fivo else cfg.patience,
        min_delta=cfg.min_delta,
        checkpoint=checkpoint,
        progress=progress,
    )
    return model, guide, res


def settling(res, patience: int) -> dict:
    """How training ended: epochs run, the best validated epoch and its bound, whether early stopping ended it (the
    bound did not improve over the last ``patience`` epochs) and the change of the validation bound over the 25
    epochs before the best one (nats per step)."""
    v = np.asarray(res.validation)
    b = int(res.best_epoch) if res.best_epoch is not None else len(v) - 1
    return {
        "epochs_run": len(v),
        "best_epoch": b + 1,
        "best_validation_per_step": float(v[b]),
        "stopped_early": res.best_epoch is not None and len(v) - (b + 1) >= patience,
        "validation_change_25_epochs_before_best": float(v[b] - v[max(0, b - 25)]),
        # the trend without the noise of single validation passes: means over the last three 25-epoch windows
        "validation_window_means_last_75_epochs": [float(np.mean(w)) for w in np.array_split(v[-75:], 3)],
    }


def bound_table(key, model, guide, res, seqs, ks) -> dict:
    """Negative held-out bounds per step: ``elbo`` (K=max), ``iwae_K``, ``fivo_K``."""
    out = {
        "elbo": evaluate_bound(
            key, model, res.params, seqs, guide=guide, guide_params=res.guide_params, bound="elbo", num_samples=max(ks)
        )
    }
    for i, k in enumerate(ks):
        for b in ("iwae", "fivo"):
            out[f"{b}_{k}"] = evaluate_bound(
                jax.random.fold_in(key, 10 * i + (b == "fivo")),
                model,
                res.params,
                seqs,
                guide=guide,
                guide_params=res.guide_params,
                bound=b,
                num_samples=k,
            )
    return out


def _time_means(T: int) -> AdditiveFunctional:
    def h(x_prev, x, t):
        return jax.nn.one_hot(t, T, dtype=x.dtype)[:, None] * x[None, :]

    def h0(x0):
        return jax.nn.one_hot(0, T, dtype=x0.dtype)[:, None] * x0[None, :]

    return AdditiveFunctional.from_fn(h, h0)


def _guide_draws(key, model, guide, res, y, num: int):
    ones = jnp.ones(y.shape[0], bool)

    def draw(k):
        return path_log_weight(k, model, res.params, guide, res.guide_params, y, ones, ones)[1]

    return jax.vmap(draw)(jax.random.split(key, num))


def smoothing(key, model, guide, res, seqs: Sequences, num_particles: int, count: int) -> dict:
    """Amortised vs SMC (guided filter + PaRIS) smoothed latent means on ``count`` held-out chorales."""
    diffs, sds, guided_ll, boot_ll, steps, example = [], [], [], [], 0, None
    # every chorale is padded to the longest with unobserved trailing steps (they leave the smoothing
    # distribution of the real steps unchanged), so each algorithm compiles once
    T = int(np.max(np.asarray(seqs.lengths[:count])))
    fk = guide.feynman_kac(model, res.guide_params)
    for b in range(min(count, len(seqs))):
        n = int(seqs.lengths[b])
        y = jnp.asarray(seqs.emissions[b, :T])
        obs = jnp.arange(T) < n
        kb = jax.random.fold_in(key, b)
        draws = _guide_draws(kb, model, guide, res, y[:n], 64)
        amortised = draws.mean(0)
        h = guide.features(res.guide_params, y, obs)  # padded steps reset to h_0: real steps see only themselves
        smc = paris(
            jax.random.fold_in(kb, 1), fk, res.params, y, num_particles, _time_means(T), inputs=h, mask=obs
        ).estimate[:n]
        diffs.append(np.abs(np.asarray(smc - amortised)))
        sds.append(np.asarray(draws.std(0)))
        pf = particle_filter(jax.random.fold_in(kb, 2), fk, res.params, y, num_particles, inputs=h, mask=obs)
        guided_ll.append(float(pf.log_likelihood))
        pf = particle_filter(jax.random.fold_in(kb, 3), model, res.params, y, num_particles, mask=obs)
        boot_ll.append(float(pf.log_likelihood))
        steps += n
        if example is None:
            example = (np.asarray(amortised), np.asarray(draws.std(0)), np.asarray(smc), np.asarray(draws))
    d, s = np.concatenate(diffs), np.concatenate(sds)
    return {
        "smc_vs_amortised_mean_abs_diff": float(d.mean()),
        "smc_vs_amortised_diff_over_posterior_sd": float((d / np.maximum(s, 1e-6)).mean()),
        "guided_filter_nll_per_step": -float(np.sum(guided_ll)) / steps,
        "bootstrap_filter_nll_per_step": -float(np.sum(boot_ll)) / steps,
        "smoothing_particles": num_particles,
        "_example": example,
    }


def figures(out: Path, runs: dict, data: dict, model, res, example, key) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
    for name, (_, _, r) in runs.items():
        e = np.arange(1, len(r.losses) + 1)
        ax[0].plot(e, r.losses, label=f"{name}-trained (train, annealed)")
        ax[1].plot(e, r.validation, label=f"{name}-trained")
    ax[0].set(xlabel="epoch", ylabel="training loss (nats / step)")
    ax[1].set(xlabel="epoch", ylabel="validation bound (nats / step): −ELBO, −FIVO")
    for a in ax:
        a.legend(fontsize=8)
    figs["training_curves"] = fig

    from pssm.protocol import simulate

    test = data["test"]
    fig, ax = plt.subplots(1, 4, figsize=(13, 3.2), sharey=True)
    for i in range(2):
        n = int(test.lengths[i])
        ax[i].imshow(np.asarray(test.emissions[i, :n]).T, aspect="auto", origin="lower", cmap="Greys")
        ax[i].set(title=f"test chorale {i}", xlabel="quarter notes")
        _, ys = simulate(jax.random.fold_in(key, i), model, res.params, n)
        ax[2 + i].imshow(np.asarray(ys).T, aspect="auto", origin="lower", cmap="Greys")
        ax[2 + i].set(title=f"model sample {i}", xlabel="quarter notes")
    ax[0].set_ylabel("key (MIDI − 21)")
    ax[0].set_ylim(20, 75)
    figs["piano_rolls"] = fig

    amortised, sd, smc, _ = example
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.2), sharex=True)
    t = np.arange(amortised.shape[0])
    for d in range(3):
        ax[d].fill_between(
            t, amortised[:, d] - 2 * sd[:, d], amortised[:, d] + 2 * sd[:, d], alpha=0.25, label="amortised ±2 sd"
        )
        ax[d].plot(t, amortised[:, d], label="amortised mean")
        ax[d].plot(t, smc[:, d], "--", label="guided SMC + PaRIS")
        ax[d].set(title=f"latent dim {d}", xlabel="quarter notes")
    ax[0].legend(fontsize=8)
    figs["latent_smoothing"] = fig
    for name, f in figs.items():
        f.savefig(out / f"{name}.png", dpi=90, bbox_inches="tight")
    return figs


def arviz_summary(draws: np.ndarray, out: Path):
    """ArviZ summary of the amortised posterior of the first latent dims on the first held-out chorale."""
    import arviz as az

    idata = az.from_dict(posterior={"z": draws[None, :, :, :4]}, dims={"z": ["time", "latent_dim"]})
    summ = az.summary(idata, kind="stats")
    summ.to_csv(out / "arviz_summary.csv")
    return idata, summ


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small networks, few chorales and epochs")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--fivo-epochs", type=int, default=None)
    ap.add_argument("--learning-rate", type=float, default=None)
    ap.add_argument("--patience", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "case_studies" / "output" / "bach_chorales"))
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--checkpoint-dir", default=None, help="checkpoint both trainings here (resume after a kill)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cfg = QUICK if args.quick else Config()
    if args.epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=args.epochs)
    if args.fivo_epochs is not None:
        cfg = dataclasses.replace(cfg, fivo_epochs=args.fivo_epochs)
    if args.learning_rate is not None:
        cfg = dataclasses.replace(cfg, learning_rate=args.learning_rate)
    if args.patience is not None:
        cfg = dataclasses.replace(cfg, patience=args.patience)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    data = {
        "train": subset(load_bach_chorales("train"), cfg.max_train, cfg.max_length),
        "valid": subset(load_bach_chorales("valid"), cfg.max_test, cfg.max_length),
        "test": subset(load_bach_chorales("test"), cfg.max_test, cfg.max_length),
    }
    runs, tables, times = {}, {}, {}
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else None
    for i, bound in enumerate(("elbo", "fivo")):
        t1 = time.perf_counter()
        start = None
        if bound == "fivo" and cfg.fivo_init == "elbo":
            start = (runs["elbo"][2].params, runs["elbo"][2].guide_params)
        runs[bound] = train(
            jax.random.fold_in(key, i),
            cfg,
            data,
            bound=bound,
            start=start,
            checkpoint=ckpt / f"{bound}.npz" if ckpt else None,
            progress=args.progress,
        )
        times[bound] = time.perf_counter() - t1
        model, guide, res = runs[bound]
        tables[bound] = bound_table(jax.random.fold_in(key, 10 + i), model, guide, res, data["test"], cfg.eval_k)
    model, guide, res = runs["elbo"]
    smooth = smoothing(
        jax.random.fold_in(key, 20), model, guide, res, data["test"], cfg.smoothing_particles, cfg.num_smoothed
    )
    example = smooth.pop("_example")
    figs = figures(out, runs, data, model, res, example, jax.random.fold_in(key, 30))
    _, summ = arviz_summary(example[3], out)
    kmax = max(cfg.eval_k)
    el = runs["elbo"][2]
    summary = {
        "test_elbo_per_step": tables["elbo"]["elbo"],
        "test_iwae_per_step": tables["elbo"][f"iwae_{kmax}"],
        "test_fivo_per_step": tables["elbo"][f"fivo_{kmax}"],
        "eval_k": kmax,
        "bounds_elbo_trained": tables["elbo"],
        "bounds_fivo_trained": tables["fivo"],
        "fivo_trained_test_fivo_per_step": tables["fivo"][f"fivo_{kmax}"],
        "fivo_trained_test_elbo_per_step": tables["fivo"]["elbo"],
        "epoch_seconds_median": float(
            np.median(np.asarray(el.epoch_seconds)[1:] if cfg.epochs > 1 else el.epoch_seconds)
        ),
        "fivo_epoch_seconds_median": float(np.median(np.asarray(runs["fivo"][2].epoch_seconds))),
        **{f"elbo_trained_{k}": v for k, v in settling(el, cfg.patience).items()},
        **{f"fivo_trained_{k}": v for k, v in settling(runs["fivo"][2], cfg.fivo_patience).items()},
        **smooth,
        "config": dataclasses.asdict(cfg),
        "num_train": len(data["train"]),
        "num_test": len(data["test"]),
        "train_seconds": times,
        "seconds": time.perf_counter() - t0,
    }
    from pssm.reporting import Page

    page = Page("Bach chorales: deep Markov model")
    page.section("Held-out bounds (negative, nats per time step; lower is better)")
    page.table({k: {kk: v for kk, v in tables[k].items()} for k in tables}, caption="rows: training objective")
    page.section("Training").figure(figs["training_curves"], "training loss and validation −ELBO per epoch")
    page.section("Samples").figure(figs["piano_rolls"], "held-out chorales and model samples of the same length")
    page.section("Latent smoothing").figure(figs["latent_smoothing"], "amortised posterior vs guided SMC + PaRIS")
    page.table(summ.head(12), caption="ArviZ summary of the amortised posterior (first chorale, first 4 dims)")
    page.write(out / "report.html")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
