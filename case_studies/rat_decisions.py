"""Decision-making states: a Bernoulli GLM-HMM over the trials of a rat (psytrack sample rat W053).

20,000 two-alternative choices in 80 sessions.  Each trial's choice ``y`` in {1, 2} is coded 0/1 and modelled by
a Bernoulli GLM-HMM (Ashwood et al., Nat. Neurosci. 2022): K hidden states follow a Markov chain across the
trials of a session, and in state k

.. math::  P(y_t = 2 \\mid z_t = k) = \\sigma(b_k + w_{k,1} s_{1,t} + w_{k,2} s_{2,t} + w_{k,h} h_t),

with the two stimuli ``s1_0``, ``s2_0`` (standardised), ``h_0`` = the previous trial's correct side (+-1, 0 at the
start of a session) and a per-state bias ``b_k`` -- an :class:`~pssm.models.glm.hmm_glm.HMMGLM` with one output, no
spike-history coupling, external covariates with per-state weights and Bernoulli observations.

Protocol (Ashwood et al.): sessions are assigned at random to 5 folds; for each fold, fit on the other sessions by
EM (``--restarts`` starts; K > 1 starts from the fold's 1-state GLM weights plus Gaussian noise, sticky
transitions 0.95; the best by training log-likelihood is kept) and score the held-out sessions with the exact
forward algorithm.  Reported in bits per trial: each K against the 1-state GLM, and the GLM against a bias-only
model (a Bernoulli with the training choice rate).  The pooled number is sum(LL_K - LL_ref) / (n_test ln 2) over
all folds; per-fold values give the standard error.  DESIGN.md §3 measured the same protocol with dynamax's
``LogisticRegressionHMM`` (5 inits x 300 EM iterations): +0.020 (K=2), +0.030 (K=3), +0.035 (K=4) bits/trial over
the GLM; GLM +0.079 over bias-only.

A K=``--plot-k`` model is then fitted on all sessions: per-state weights, occupancies, dwell times, per-state
psychometric curves (P(y=2) against the stimulus difference s1 - s2; in this task the difference takes nearly
only two values, +-0.75, so the model curves are drawn on a continuous axis at the mean stimulus level and the
data per stimulus pair, each trial weighted by its posterior state probability) and posterior state
probabilities in example sessions.

Writes ``figure_psychometric.png``, ``figure_cv.png``, ``figure_sessions.png``, ``report.md``, ``summary.json``
under ``--out``; the JSON is also the last printed line.  ``--quick`` (the test suite): K=1..3, 2 folds, 1 start,
60 EM iterations, every session padded to the longest one (masked steps) so that the training and test sets of
both folds share one shape and each K compiles once.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pssm.boundary import as_sequences  # noqa: E402
from pssm.data import Sequences, group_folds  # noqa: E402
from pssm.inference import fit_em, marginal_log_likelihood, smoother  # noqa: E402
from pssm.metrics import bits_per  # noqa: E402
from pssm.models import HMM, HMMParams  # noqa: E402
from pssm.models.glm import HMMGLM  # noqa: E402
from pssm.models.glm.metrics import homogeneous_log_likelihood  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "data" / "psytrack_rat_W053.csv"
COVARIATES = ["s1_0", "s2_0", "h_0"]
DESIGN_BITS_VS_GLM = {"2": 0.020, "3": 0.030, "4": 0.035}
DESIGN_GLM_VS_BIAS = 0.079


def make_model(K: int, args) -> HMM:
    """K-state Bernoulli GLM-HMM (sticky start 0.95); M-step: ``args.inner_steps`` Adam steps at
    ``args.learning_rate``."""
    return HMMGLM(
        K,
        1,
        basis=None,
        num_covariates=len(COVARIATES),
        observation="bernoulli",
        link="logistic",
        shared_bias=False,
        self_transition=0.95,
        inner_steps=args.inner_steps,
        learning_rate=args.learning_rate,
    )


def load_sessions(path: str):
    df = pd.read_csv(path)
    missing = [c for c in ["session", "y", *COVARIATES] if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}.")
    if not set(np.unique(df["y"])) <= {1, 2}:
        raise ValueError("column y must hold choices 1 or 2.")
    parts = [g for _, g in df.groupby("session", sort=True)]
    ys = [(g["y"].to_numpy() - 1).astype(np.float32)[:, None] for g in parts]
    xs = [g[COVARIATES].to_numpy(dtype=np.float32) for g in parts]
    sessions = np.array([int(g["session"].iloc[0]) for g in parts])
    return df, parts, ys, xs, sessions


def pad_time(data: Sequences, length: int) -> Sequences:
    """``data`` padded along time to ``length`` steps (masked, beyond every sequence's length: they contribute
    nothing to the fits or the log-likelihoods)."""

    def pad(a):
        return jnp.pad(a, [(0, 0), (0, length - a.shape[1])] + [(0, 0)] * (a.ndim - 2))

    return Sequences(pad(data.emissions), pad(data.mask), data.lengths, jax.tree.map(pad, data.inputs), data.kind)


def glm_start(key, model: HMM, glm_params: HMMParams, noise: float) -> HMMParams:
    """K-state start from a 1-state GLM: its bias and weights copied to every state plus N(0, noise^2); uniform
    initial distribution and the model's sticky starting transition matrix."""
    K = model.num_states
    k0, k1, k2 = jax.random.split(key, 3)
    em = glm_params.emissions
    dtype = em.bias.dtype
    bias = jnp.broadcast_to(em.bias.reshape(1, 1), (K, 1)) + noise * jax.random.normal(k1, (K, 1), dtype)
    iw = jnp.broadcast_to(em.input_weights, (K, 1, len(COVARIATES))) + noise * jax.random.normal(
        k2, (K, 1, len(COVARIATES)), dtype
    )
    return HMMParams(
        model.initial_component.initialize(k0, K, dtype),
        model.transition_component.initialize(k0, K, dtype),
        em._replace(bias=bias, input_weights=iw),
    )


def fit_k(key, K: int, data: Sequences, glm_params: HMMParams | None, args) -> tuple:
    """Best of ``args.restarts`` EM fits (by training objective) for a K-state model."""
    model = make_model(K, args)
    fits = []
    n_starts = 1 if K == 1 else args.restarts
    for k in jax.random.split(key, n_starts):
        k0, k1 = jax.random.split(k)
        if K == 1 or glm_params is None or args.init == "kmeans":
            p0 = model.initialize(k0, data)  # k-means labels + weighted M-steps
        else:
            p0 = glm_start(k0, model, glm_params, args.init_noise)
        fits.append(fit_em(k1, model, p0, data, num_iters=args.iters, tol=args.tol, min_iters=5))
    best = max(fits, key=lambda f: float(f.log_objective[-1]))
    return model, best, fits


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--states", type=int, nargs="+", default=[1, 2, 3, 4], help="K values (1 = the GLM)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument(
        "--fold-scheme",
        choices=["random", "contiguous"],
        default="random",
        help="random session assignment (Ashwood et al.) or contiguous blocks of sessions",
    )
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--init", choices=["glm", "kmeans"], default="glm")
    ap.add_argument("--init-noise", type=float, default=0.2)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--inner-steps", type=int, default=10)
    ap.add_argument("--learning-rate", type=float, default=0.05)
    ap.add_argument("--tol", type=float, default=1e-7)
    ap.add_argument("--plot-k", type=int, default=3, help="K of the all-session fit for psychometric curves")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "case_studies" / "output" / "rat_decisions"))
    ap.add_argument("--quick", action="store_true", help="K=1..3, 2 folds, 1 start, 60 EM iterations (lr 0.1)")
    args = ap.parse_args(argv)
    if args.quick:
        args.states, args.folds, args.restarts, args.iters, args.learning_rate = [1, 2, 3], 2, 1, 60, 0.1
        args.plot_k = min(args.plot_k, 3)
    if 1 not in args.states:
        args.states = [1, *args.states]
    args.states = sorted(set(args.states))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    df, parts, ys, xs, sessions = load_sessions(args.data)
    t_max = max(len(y) for y in ys)
    if args.fold_scheme == "random":
        perm = np.random.default_rng(args.seed).permutation(sessions)
        folds = [np.sort(f) for f in np.array_split(perm, args.folds)]
    else:
        folds = group_folds(sessions, args.folds)

    # ---------------------------------------------------------------- cross-validation over sessions
    key = jax.random.PRNGKey(args.seed)
    Ks = args.states
    test_ll = {K: [] for K in Ks}
    train_ll = {K: [] for K in Ks}
    bias_ll, n_test, n_train, fold_seconds = [], [], [], []
    fit_seconds = {K: 0.0 for K in Ks}
    for fi, test_sessions in enumerate(folds):
        t_fold = time.perf_counter()
        is_test = np.isin(sessions, test_sessions)
        tr = np.flatnonzero(~is_test)
        te = np.flatnonzero(is_test)
        glm_params = None
        for K in Ks:
            model = make_model(K, args)
            d_tr = as_sequences(model, [ys[i] for i in tr], [xs[i] for i in tr])
            d_te = as_sequences(model, [ys[i] for i in te], [xs[i] for i in te])
            if args.quick:  # one padded length for every fold: the fits and scores of a K compile once
                d_tr, d_te = pad_time(d_tr, t_max), pad_time(d_te, t_max)
            key, sub = jax.random.split(key)
            t0 = time.perf_counter()
            model, best, _ = fit_k(sub, K, d_tr, glm_params, args)
            fit_seconds[K] += time.perf_counter() - t0
            if K == 1:
                glm_params = best.params
                p_right = float(np.asarray(d_tr.emissions)[np.asarray(d_tr.mask)].mean())
                bias_ll.append(float(homogeneous_log_likelihood(d_te, jnp.array([p_right]), "bernoulli")))
                n_test.append(int(np.asarray(d_te.mask).sum()))
                n_train.append(int(np.asarray(d_tr.mask).sum()))
            test_ll[K].append(float(marginal_log_likelihood(model, best.params, d_te).sum()))
            train_ll[K].append(float(marginal_log_likelihood(model, best.params, d_tr).sum()))
        fold_seconds.append(time.perf_counter() - t_fold)
        print(
            f"fold {fi}: {len(te)} test sessions, {n_test[-1]} trials; bits/trial vs GLM "
            + ", ".join(f"K={K} {bits_per(test_ll[K][-1], test_ll[1][-1], n_test[-1]):+.4f}" for K in Ks if K > 1)
            + f"; GLM vs bias {bits_per(test_ll[1][-1], bias_ll[-1], n_test[-1]):+.4f} ({fold_seconds[-1]:.1f} s)",
            flush=True,
        )
    n_tot = float(sum(n_test))

    def pooled(a, b):
        return bits_per(sum(a), sum(b), n_tot)

    def per_fold(a, b):
        v = np.array([bits_per(x, y, n) for x, y, n in zip(a, b, n_test, strict=True)])
        return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0

    bits_vs_glm = {str(K): pooled(test_ll[K], test_ll[1]) for K in Ks}
    bits_vs_glm_fold = {str(K): per_fold(test_ll[K], test_ll[1]) for K in Ks}
    glm_vs_bias = pooled(test_ll[1], bias_ll)
    glm_vs_bias_fold = per_fold(test_ll[1], bias_ll)
    train_bits_vs_glm = {str(K): bits_per(sum(train_ll[K]), sum(train_ll[1]), float(sum(n_train))) for K in Ks}

    # ---------------------------------------------------------------- all-session fit for interpretation
    Kp = args.plot_k
    t0 = time.perf_counter()
    model_glm = make_model(1, args)
    d_all1 = as_sequences(model_glm, ys, xs)
    key, k1, k2 = jax.random.split(key, 3)
    _, glm_all, _ = fit_k(k1, 1, d_all1, None, args)
    model_p = make_model(Kp, args)
    d_all = as_sequences(model_p, ys, xs)
    _, fit_p, _ = fit_k(k2, Kp, d_all, glm_all.params, args)
    post = smoother(model_p, fit_p.params, d_all)
    all_fit_seconds = time.perf_counter() - t0
    em = fit_p.params.emissions
    bias = np.asarray(em.bias).reshape(Kp)
    W = np.asarray(em.input_weights).reshape(Kp, len(COVARIATES))
    sens = W[:, 0] - W[:, 1]  # weight on the stimulus difference s1 - s2 (in units of half the pair's spread)
    order = np.argsort(-sens)  # state 0 = most stimulus-driven
    bias, W, sens = bias[order], W[order], sens[order]
    A = np.asarray(fit_p.params.transitions.matrix)[np.ix_(order, order)]
    mask = np.asarray(d_all.mask)
    gamma = np.asarray(post.smoothed_probs)[..., order]  # (B, T, K)
    g_flat = gamma[mask]  # (n, K) in session/trial order
    y_flat = np.asarray(d_all.emissions)[..., 0][mask]
    x_flat = np.asarray(d_all.inputs)[mask]
    occupancy = g_flat.mean(0)
    dwell = 1.0 / np.maximum(1.0 - np.diag(A), 1e-9)
    acc_state = []
    correct = np.concatenate([p["correct"].to_numpy() for p in parts])
    for k in range(Kp):
        acc_state.append(float((g_flat[:, k] * correct).sum() / max(g_flat[:, k].sum(), 1e-9)))

    # psychometric data: per stimulus pair, posterior-weighted P(y=2) per state, and the model's prediction
    pair = np.round(x_flat[:, :2], 3)
    pairs, inv = np.unique(pair, axis=0, return_inverse=True)
    inv = inv.ravel()
    delta_pairs = pairs[:, 0] - pairs[:, 1]
    pord = np.lexsort((pairs.mean(1), delta_pairs))
    eta = bias[None, :] + x_flat @ W.T  # (n, K)
    p_model = 1.0 / (1.0 + np.exp(-eta))
    emp = np.zeros((len(pairs), Kp))
    mod = np.zeros((len(pairs), Kp))
    wsum = np.zeros((len(pairs), Kp))
    for j in range(len(pairs)):
        sel = inv == j
        wsum[j] = g_flat[sel].sum(0)
        emp[j] = (g_flat[sel] * y_flat[sel, None]).sum(0) / np.maximum(wsum[j], 1e-9)
        mod[j] = (g_flat[sel] * p_model[sel]).sum(0) / np.maximum(wsum[j], 1e-9)

    # ---------------------------------------------------------------- figures
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    grid = np.linspace(-1.6, 1.6, 161)
    s_bar = float(x_flat[:, :2].mean())
    for k in range(Kp):
        c = colors[k % len(colors)]
        curve = 1.0 / (1.0 + np.exp(-(bias[k] + W[k, 0] * (s_bar + grid / 2) + W[k, 1] * (s_bar - grid / 2))))
        axes[0].plot(grid, curve, color=c, label=f"state {k} (occ. {occupancy[k]:.2f})")
        for sgn in (-1, 1):
            sel_p = np.sign(delta_pairs) == sgn
            w_k = wsum[sel_p, k]
            if w_k.sum() > 0:
                pe = float((emp[sel_p, k] * w_k).sum() / w_k.sum())
                dx = float((delta_pairs[sel_p] * w_k).sum() / w_k.sum())
                se = np.sqrt(pe * (1 - pe) / max(w_k.sum(), 1.0))
                axes[0].errorbar(dx, pe, yerr=1.96 * se, fmt="o", color=c, capsize=3)
        axes[1].plot(np.arange(len(pairs)), emp[pord, k], "o", color=c, label=f"state {k} data")
        axes[1].plot(np.arange(len(pairs)), mod[pord, k], "-", color=c, alpha=0.7)
    axes[0].set_xlabel("stimulus difference s1 - s2 (standardised)")
    axes[0].set_ylabel("P(choice y = 2)")
    axes[0].set_title(f"per-state psychometric curves, K={Kp} (lines: model at h=0; dots: data ±95%)", fontsize=9)
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    axes[1].set_xticks(np.arange(len(pairs)))
    axes[1].set_xticklabels([f"{a:+.1f}/{b:+.1f}" for a, b in pairs[pord]], rotation=90, fontsize=7)
    axes[1].set_xlabel("stimulus pair s1/s2 (sorted by s1 - s2)")
    axes[1].set_ylabel("P(choice y = 2)")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("per stimulus pair, posterior-weighted (dots: data, lines: model)", fontsize=9)
    width = 0.8 / Kp
    names = ["bias", *COVARIATES]
    allw = np.column_stack([bias, W])
    for k in range(Kp):
        axes[2].bar(
            np.arange(len(names)) + (k - (Kp - 1) / 2) * width,
            allw[k],
            width,
            color=colors[k % len(colors)],
            label=f"state {k}",
        )
    glm_em = glm_all.params.emissions
    glm_w = np.r_[np.asarray(glm_em.bias).ravel(), np.asarray(glm_em.input_weights).ravel()]
    axes[2].plot(np.arange(len(names)), glm_w, "k_", markersize=20, mew=2, label="1-state GLM")
    axes[2].axhline(0, color="k", lw=0.5)
    axes[2].set_xticks(np.arange(len(names)))
    axes[2].set_xticklabels(names)
    axes[2].set_ylabel("weight (logit)")
    axes[2].set_title("per-state GLM weights (all sessions)", fontsize=9)
    axes[2].legend(fontsize=8)
    fig.savefig(out / "figure_psychometric.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5), constrained_layout=True)
    kk = [K for K in Ks if K > 1]
    ax.errorbar(
        kk,
        [bits_vs_glm[str(K)] for K in kk],
        yerr=[bits_vs_glm_fold[str(K)][1] for K in kk],
        fmt="o-",
        label="pssm (pooled over folds, ±SEM over folds)",
    )
    dk = [int(k) for k in DESIGN_BITS_VS_GLM if int(k) in kk]
    ax.plot(dk, [DESIGN_BITS_VS_GLM[str(k)] for k in dk], "s--", color="gray", label="dynamax (DESIGN.md §3)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(kk)
    ax.set_xlabel("number of states K")
    ax.set_ylabel("held-out bits / trial vs 1-state GLM")
    ax.legend(fontsize=8)
    fig.savefig(out / "figure_cv.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    lengths = np.asarray(d_all.lengths)
    show = np.argsort(-lengths)[:3]
    fig, axes = plt.subplots(len(show), 1, figsize=(10, 2.0 * len(show)), sharey=True, constrained_layout=True)
    for a, b in zip(np.atleast_1d(axes), show, strict=True):
        L = int(lengths[b])
        for k in range(Kp):
            a.plot(np.arange(L), gamma[b, :L, k], color=colors[k % len(colors)], label=f"state {k}")
        a.set_ylabel(f"session {sessions[b]}")
        a.set_ylim(-0.02, 1.02)
    np.atleast_1d(axes)[0].legend(fontsize=8, ncol=Kp, loc="upper right")
    np.atleast_1d(axes)[-1].set_xlabel("trial")
    fig.suptitle(f"posterior state probabilities, K={Kp}, three longest sessions", fontsize=9)
    fig.savefig(out / "figure_sessions.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    # ---------------------------------------------------------------- report
    lines = [
        "# Decision-making states: Bernoulli GLM-HMM on psytrack rat W053",
        "",
        f"{len(df)} trials in {len(parts)} sessions; inputs {', '.join(COVARIATES)} and a per-state bias. "
        f"{args.folds}-fold cross-validation over whole sessions ({args.fold_scheme} assignment, seed {args.seed}); "
        f"EM with {args.restarts} starts per K>1 ({args.init} init, noise {args.init_noise}), up to {args.iters} "
        f"iterations × {args.inner_steps} Adam steps (lr {args.learning_rate}).",
        "",
        "| K | held-out bits/trial vs GLM (pooled) | per-fold mean ± SEM | DESIGN §3 (dynamax) |"
        " train bits/trial vs GLM | fit time over folds (s) |",
        "|---|---|---|---|---|---|",
    ]
    for K in Ks:
        m_, s_ = bits_vs_glm_fold[str(K)]
        ref = f"{DESIGN_BITS_VS_GLM[str(K)]:+.3f}" if str(K) in DESIGN_BITS_VS_GLM else ("0" if K == 1 else "–")
        lines.append(
            f"| {K} | {bits_vs_glm[str(K)]:+.4f} | {m_:+.4f} ± {s_:.4f} | "
            f"{ref} | "
            f"{train_bits_vs_glm[str(K)]:+.4f} | {fit_seconds[K]:.1f} |"
        )
    lines += [
        "",
        f"GLM vs bias-only: {glm_vs_bias:+.4f} bits/trial pooled ({glm_vs_bias_fold[0]:+.4f} ± "
        f"{glm_vs_bias_fold[1]:.4f} per fold); DESIGN §3: +{DESIGN_GLM_VS_BIAS:.3f}.",
        "",
        f"## All-session K={Kp} fit (states ordered by stimulus weight w_s1 - w_s2)",
        "",
        "| state | bias | w_s1 | w_s2 | w_h | w_s1 - w_s2 | occupancy | expected dwell (trials) | accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in range(Kp):
        lines.append(
            f"| {k} | {bias[k]:+.3f} | {W[k, 0]:+.3f} | {W[k, 1]:+.3f} | {W[k, 2]:+.3f} | {sens[k]:+.3f} | "
            f"{occupancy[k]:.3f} | {dwell[k]:.1f} | {acc_state[k]:.3f} |"
        )
    lines += [
        "",
        "1-state GLM weights (bias, "
        + ", ".join(COVARIATES)
        + "): "
        + ", ".join(f"{v:+.3f}" for v in glm_w)
        + f"; overall accuracy {correct.mean():.3f}.",
        "",
        "Transition matrix (rows: from state):",
        "",
    ]
    lines += ["    " + " ".join(f"{v:.3f}" for v in row) for row in A]
    lines += [
        "",
        "![cv](figure_cv.png)",
        "",
        "![psychometric](figure_psychometric.png)",
        "",
        "![sessions](figure_sessions.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))

    summary = {
        "bits_per_trial_vs_glm": bits_vs_glm,
        "bits_per_trial_vs_glm_fold_mean_sem": bits_vs_glm_fold,
        "glm_vs_bias_bits_per_trial": glm_vs_bias,
        "glm_vs_bias_fold_mean_sem": list(glm_vs_bias_fold),
        "train_bits_per_trial_vs_glm": train_bits_vs_glm,
        "design_dynamax_bits_per_trial_vs_glm": DESIGN_BITS_VS_GLM,
        "design_dynamax_glm_vs_bias": DESIGN_GLM_VS_BIAS,
        "heldout_ll_per_trial": {str(K): sum(test_ll[K]) / n_tot for K in Ks},
        "num_trials": int(len(df)),
        "num_sessions": len(parts),
        "folds": args.folds,
        "fold_scheme": args.fold_scheme,
        "restarts": args.restarts,
        "em_iters": args.iters,
        "plot_k": Kp,
        "state_weights": {"bias": bias.tolist(), **{c: W[:, i].tolist() for i, c in enumerate(COVARIATES)}},
        "state_occupancy": occupancy.tolist(),
        "state_accuracy": acc_state,
        "state_dwell_trials": dwell.tolist(),
        "timing": {
            "seconds": round(time.perf_counter() - t_start, 2),
            "fold_seconds": [round(s, 2) for s in fold_seconds],
            "fit_seconds_per_K_all_folds": {str(K): round(v, 2) for K, v in fit_seconds.items()},
            "all_session_fit_seconds": round(all_fit_seconds, 2),
        },
        "output_dir": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
