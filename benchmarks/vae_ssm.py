"""Deep VAE state-space models: pssm vs Pyro on Bach chorales, bounds, kill-and-resume, VI smoothing, head direction.

1. **Side by side with Pyro.**  The same DMM (Pyro's architecture: gated transition, Bernoulli emitter, backward
   ReLU RNN + combiner guide), the same optimiser settings (ClippedAdam: element-wise clip 10, L2 weight decay,
   per-step learning-rate decay), KL annealing, minibatch size, epochs, seeded per-epoch shuffle and chorale split,
   trained by pssm (NumPyro SVI, ``Trace_ELBO``) and by Pyro 1.9.2 / torch 2.13 CPU (``benchmarks/peers``, its own
   virtualenv made on first use).  Both run in child processes pinned to the same CPU, one after the other, with one
   thread each.  Reported: median epoch seconds (the first epochs of pssm include XLA compilation; the median over
   epochs is what a long run pays per epoch), and the held-out negative ELBO per time step (mean of single-sample
   passes for Pyro, a 10-sample ELBO for pssm: the same expectation; ``test_elbo_per_step_equal_epochs``), plus
   pssm's IWAE and FIVO bounds (K = 16).  Both timed runs are kept in ``benchmarks/output/vae_ssm`` with their
   settings and reused by later calls with the same settings (``--rerun`` repeats them).
   **Settled bounds** (full run): ``test_elbo_per_step``, ``test_iwae_per_step``, ``test_fivo_per_step`` and the
   FIVO-trained model's come from the full Bach-chorale case study (``case_studies/bach_chorales.py``: the same
   networks trained with early stopping until the validation bound stops improving; its ``summary.json`` is read,
   or the case study is run when absent), with the epochs each training ran and its best epoch.
2. **Kill and resume.**  A child trains with a checkpoint every epoch and is killed with SIGKILL after its second
   checkpoint; the same command run again resumes and finishes.  ``resume_max_abs_diff`` compares its parameters
   with an uninterrupted child run with the same key (0.0 = identical).
3. **Variational smoothing** on a linear Gaussian model (structured Gaussian-Markov guide, NumPyro SVI) vs RTS.
4. **Head direction**: the Poisson DMM's latent angle vs the supervised decoder and the Poisson LDS
   (``case_studies/head_direction.py``).

Prints one JSON object as its last line.  ``--quick``: small networks, 40 training chorales, 3 epochs (figures of
no scientific weight; it checks the machinery end to end).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / "data" / "bach_chorales.npz"
OUT = HERE / "output" / "vae_ssm"

FULL = dict(z_dim=100, emission_dim=100, transition_dim=200, rnn_dim=600, epochs=20, max_train=None)
QUICK = dict(z_dim=8, emission_dim=16, transition_dim=16, rnn_dim=32, epochs=3, max_train=40)
OPTIM = dict(
    learning_rate=3e-4,
    beta1=0.96,
    beta2=0.999,
    clip_norm=10.0,
    lr_decay=0.99996,
    weight_decay=2.0,
    annealing_epochs=1000,
    minimum_annealing_factor=0.2,
    batch_size=20,
    seed=0,
)


# ---------------------------------------------------------------------------------------- child: pssm training
def _ours(cfg: dict) -> dict:
    import jax

    from pssm.datasets import load_bach_chorales
    from pssm.inference.variational import clipped_adam, evaluate_bound, fit_vae
    from pssm.inference.variational.numpyro_vae import FlatModule
    from pssm.models.deep import DeepMarkovModel, Encoder

    sys.path.insert(0, str(ROOT / "case_studies"))
    from bach_chorales import subset

    model = DeepMarkovModel(cfg["z_dim"], 88, "bernoulli", cfg["emission_dim"], cfg["transition_dim"])
    guide = Encoder(cfg["z_dim"], 88, hidden=cfg["rnn_dim"])
    key = jax.random.key(cfg["seed"])
    k0, k1, k2, k3 = jax.random.split(key, 4)
    train = subset(load_bach_chorales("train"), cfg["max_train"])
    opt = clipped_adam(
        cfg["learning_rate"],
        b1=cfg["beta1"],
        b2=cfg["beta2"],
        clip=cfg["clip_norm"],
        weight_decay=cfg["weight_decay"],
        lr_decay=cfg["lr_decay"],
    )
    t0 = time.perf_counter()
    res = fit_vae(
        k2,
        model,
        model.init_params(k0),
        train,
        guide=guide,
        guide_params=guide.init_params(k1),
        num_epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        optimizer=opt,
        annealing_epochs=cfg["annealing_epochs"],
        min_annealing=cfg["minimum_annealing_factor"],
        checkpoint=cfg.get("checkpoint"),
        checkpoint_every=1,
    )
    out = {
        "epoch_seconds": np.asarray(res.epoch_seconds).tolist(),
        "train_seconds": time.perf_counter() - t0,
        "train_loss_per_step": np.asarray(res.losses).tolist(),
    }
    if cfg.get("params_out"):
        np.save(
            cfg["params_out"],
            np.concatenate([np.asarray(FlatModule(res.params).flat), np.asarray(FlatModule(res.guide_params).flat)]),
        )
    if cfg.get("evaluate", True):
        test = load_bach_chorales("test")
        for name, bound, k in (
            ("test_elbo_per_step", "elbo", 10),
            ("test_iwae_per_step", "iwae", 16),
            ("test_fivo_per_step", "fivo", 16),
        ):
            out[name] = evaluate_bound(
                k3, model, res.params, test, guide=guide, guide_params=res.guide_params, bound=bound, num_samples=k
            )
    return out


def _run_child(cfg: dict, cpus: list[int] | None, *, wait: bool = True):
    env = dict(os.environ, OMP_NUM_THREADS="1", JAX_PLATFORMS="cpu")
    if cpus and len(cpus) == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)]
    pre = (lambda: os.sched_setaffinity(0, set(cpus))) if cpus else None
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=pre)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=pre)
    if proc.returncode != 0:
        raise RuntimeError(f"pssm child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _checkpoint_epoch(path: Path) -> int:
    try:
        with np.load(path, allow_pickle=False) as f:
            return int(json.loads(bytes(f["__meta__"]).decode())["metadata"]["epoch"])
    except Exception:  # absent or being replaced
        return 0


def resume_check(sizes: dict, epochs: int) -> dict:
    """Uninterrupted child vs a child killed (SIGKILL) after its 2nd checkpoint and rerun: max |param diff|."""
    OUT.mkdir(parents=True, exist_ok=True)
    ck = OUT / "resume_checkpoint.npz"
    ck.unlink(missing_ok=True)
    base = {**OPTIM, **sizes, "epochs": epochs, "max_train": 40, "evaluate": False}
    _run_child({**base, "params_out": str(OUT / "uninterrupted.npy")}, None)
    proc = _run_child({**base, "checkpoint": str(ck), "params_out": str(OUT / "killed.npy")}, None, wait=False)
    t0 = time.perf_counter()
    while _checkpoint_epoch(ck) < 2 and proc.poll() is None and time.perf_counter() - t0 < 1800:
        time.sleep(0.05)
    killed_at = _checkpoint_epoch(ck)
    was_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _run_child({**base, "checkpoint": str(ck), "params_out": str(OUT / "resumed.npy")}, None)
    a, b = np.load(OUT / "uninterrupted.npy"), np.load(OUT / "resumed.npy")
    return {
        "resume_max_abs_diff": float(np.max(np.abs(a - b))),
        "resume_killed_after_epoch": killed_at,
        "resume_killed_while_running": bool(was_running),
        "resume_epochs": epochs,
    }


def amortised_lgssm(quick: bool) -> dict:
    """The amortised encoder (bidirectional GRU) as a smoother of a fixed linear Gaussian model, trained on
    simulated sequences and scored on fresh ones against RTS (the amortisation + Monte Carlo gap)."""
    import jax
    import jax.numpy as jnp

    from pssm import simulate
    from pssm.inference import kalman_smoother
    from pssm.inference.variational import clipped_adam, fit_vae, path_log_weight
    from pssm.models import Encoder, LinearGaussianSSM

    lg = LinearGaussianSSM(2, 2)
    p = lg.random_params(jax.random.PRNGKey(0))
    T, n, epochs = (40, 64, 20) if quick else (40, 512, 150)
    ys = jax.vmap(lambda k: simulate(k, lg, p, T)[1])(jax.random.split(jax.random.key(1), n))
    enc = Encoder(2, 2, hidden=32, direction="bidirectional", cell="gru")
    t0 = time.perf_counter()
    res = fit_vae(
        jax.random.key(3),
        lg,
        p,
        np.asarray(ys),
        guide=enc,
        guide_params=enc.init_params(jax.random.key(2)),
        num_epochs=epochs,
        batch_size=32,
        optimizer=clipped_adam(3e-3),
        train_model=False,
    )
    seconds = time.perf_counter() - t0
    test = jax.vmap(lambda k: simulate(k, lg, p, T)[1])(jax.random.split(jax.random.key(9), 8))
    ones = jnp.ones(T, bool)

    @jax.jit
    def guide_mean(y):
        draw = lambda k: path_log_weight(k, lg, p, enc, res.guide_params, y, ones, ones)[1]  # noqa: E731
        return jax.vmap(draw)(jax.random.split(jax.random.key(4), 2000)).mean(0)

    err, err_sd = [], []
    for y in test:
        ks = kalman_smoother(p, y)
        sd = jnp.sqrt(jnp.diagonal(ks.smoothed_covs, axis1=1, axis2=2))
        e = jnp.abs(guide_mean(y) - ks.smoothed_means)
        err.append(float(e.max()))
        err_sd.append(float((e / sd).mean()))
    return {
        "lgssm_amortised_mean_max_err_vs_rts": max(err),
        "lgssm_amortised_mean_err_in_posterior_sds": float(np.mean(err_sd)),
        "lgssm_amortised_epochs": epochs,
        "lgssm_amortised_seconds": seconds,
    }


def _cached(path: Path, cfg: dict, rerun: bool, run):
    """``run()``'s result, kept in ``path`` with the ``cfg`` it was made with (a pinned timing run is reused by later
    calls of this script with the same settings unless ``--rerun``)."""
    if not rerun and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("config") == cfg:
            return saved["result"]
    out = run()
    path.write_text(json.dumps({"result": out, "config": cfg}))
    return out


def _pyro(cfg: dict, cpu: int) -> tuple[dict, list]:
    """Pyro's DMM with the same settings, pinned to ``cpu``; a seed whose run fails is recorded and the next tried."""
    from peers.pyro_dmm import run_pyro_dmm  # noqa: E402 (benchmarks/ is on sys.path when run as a script)

    failed = []
    for seed in (cfg["seed"], cfg["seed"] + 1, cfg["seed"] + 2):
        try:
            pyro = run_pyro_dmm(
                DATA,
                epochs=cfg["epochs"],
                batch_size=cfg["batch_size"],
                z_dim=cfg["z_dim"],
                emission_dim=cfg["emission_dim"],
                transition_dim=cfg["transition_dim"],
                rnn_dim=cfg["rnn_dim"],
                learning_rate=cfg["learning_rate"],
                beta1=cfg["beta1"],
                beta2=cfg["beta2"],
                clip_norm=cfg["clip_norm"],
                lr_decay=cfg["lr_decay"],
                weight_decay=cfg["weight_decay"],
                annealing_epochs=cfg["annealing_epochs"],
                minimum_annealing_factor=cfg["minimum_annealing_factor"],
                seed=seed,
                cpus=[cpu],
                num_threads=1,
                max_train=cfg["max_train"],
            )
            break
        except RuntimeError as err:  # e.g. a softplus scale underflowing to 0 fails torch's argument validation
            lines = [ln for ln in str(err).splitlines() if "Error" in ln] or str(err).splitlines()[-1:]
            failed.append({"seed": seed, "error": lines[-1].strip()[:300]})
    else:
        raise RuntimeError(f"the Pyro DMM failed for every seed tried: {failed}")
    return pyro, failed


def settled_bounds(summary: str | None) -> dict:
    """Held-out bounds of models trained until their validation bound settled: the full Bach-chorale case study
    (``case_studies/bach_chorales.py``: the same DMM and encoder, early stopping on the validation bound, an
    ELBO-trained and a FIVO-trained model).  Its ``summary.json`` is read when given (or present from a full run
    with the case study's default settings); otherwise the case study runs here (about an hour on one core)."""
    sys.path.insert(0, str(ROOT / "case_studies"))
    import dataclasses

    import bach_chorales

    path = Path(summary) if summary else ROOT / "case_studies" / "output" / "bach_chorales" / "summary.json"
    want = json.loads(json.dumps(dataclasses.asdict(bach_chorales.Config())))
    got = json.loads(path.read_text()) if path.exists() else None
    if got is None or (summary is None and got.get("config") != want):
        got = bach_chorales.main(["--out", str(path.parent)])
    e, f = got["bounds_elbo_trained"], got["bounds_fivo_trained"]
    k = got["eval_k"]
    out = {
        "test_elbo_per_step": e["elbo"],
        "test_iwae_per_step": e[f"iwae_{k}"],
        "test_fivo_per_step": e[f"fivo_{k}"],
        "fivo_trained_test_elbo_per_step": f["elbo"],
        "fivo_trained_test_iwae_per_step": f[f"iwae_{k}"],
        "fivo_trained_test_fivo_per_step": f[f"fivo_{k}"],
        "settled_bounds_elbo_trained": e,
        "settled_bounds_fivo_trained": f,
        "settled_eval_k": k,
        "settled_source": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        "settled_train_seconds": got["train_seconds"],
        "settled_learning_rate": got["config"]["learning_rate"],
    }
    for b in ("elbo", "fivo"):
        for key in (
            "epochs_run",
            "best_epoch",
            "stopped_early",
            "validation_change_25_epochs_before_best",
            "validation_window_means_last_75_epochs",
        ):
            if f"{b}_trained_{key}" in got:
                out[f"settled_{b}_trained_{key}"] = got[f"{b}_trained_{key}"]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the pssm/Pyro comparison")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--skip-hd", action="store_true", help="skip the head-direction case study")
    ap.add_argument("--rerun", action="store_true", help="rerun the timed pssm and Pyro trainings (not the cache)")
    ap.add_argument("--bach-summary", default=None, help="summary.json of a full bach_chorales.py run to report")
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_ours(json.loads(args.child))))
        return {}
    t0 = time.perf_counter()
    sizes = dict(QUICK if args.quick else FULL)
    if args.epochs is not None:
        sizes["epochs"] = args.epochs
    cpu = sorted(os.sched_getaffinity(0))[-1]
    cfg = {**OPTIM, **sizes}
    OUT.mkdir(parents=True, exist_ok=True)
    ours = _cached(
        OUT / f"ours_{'quick' if args.quick else 'full'}.json", cfg, args.rerun, lambda: _run_child(cfg, [cpu])
    )
    pyro, failed = _cached(
        OUT / f"pyro_{'quick' if args.quick else 'full'}.json", cfg, args.rerun, lambda: _pyro(cfg, cpu)
    )
    ep, pep = float(np.median(ours["epoch_seconds"])), float(pyro["median_epoch_seconds"])
    result = {
        "test_elbo_per_step": ours["test_elbo_per_step"],
        "test_iwae_per_step": ours["test_iwae_per_step"],
        "test_fivo_per_step": ours["test_fivo_per_step"],
        "test_elbo_per_step_equal_epochs": ours["test_elbo_per_step"],
        "epoch_seconds": ep,
        "pyro_epoch_seconds": pep,
        "epoch_speedup_vs_pyro": pep / ep,
        "pyro_test_elbo_per_step": pyro["test_elbo_per_step"],
        "epoch_seconds_all": ours["epoch_seconds"],
        "pyro_epoch_seconds_all": pyro["epoch_seconds"],
        "train_loss_per_step_last": ours["train_loss_per_step"][-1],
        "pyro_train_loss_per_step_last": pyro["train_loss_per_step"][-1],
        "comparison": {**cfg, "cpu": cpu, "threads": 1},
        "pyro_failed_seeds": failed,
    }
    if not args.quick:
        result.update(settled_bounds(args.bach_summary))
    result.update(resume_check(QUICK, 4))
    from variational_smoothing import lgssm  # noqa: E402

    result.update(lgssm(30, 2, 2000) if args.quick else lgssm(200, 3, 5000))
    result.update(amortised_lgssm(quick=args.quick))
    if not args.skip_hd:
        sys.path.insert(0, str(ROOT / "case_studies"))
        import head_direction

        hd = head_direction.main((["--quick"] if args.quick else []) + ["--out", str(OUT / "head_direction")])
        for k in (
            "hd_latent_circular_corr",
            "hd_supervised_circular_corr",
            "hd_plds_circular_corr",
            "hd_latent_circular_corr_fisher_lee",
            "hd_plds_circular_corr_fisher_lee",
            "hd_supervised_circular_corr_fisher_lee",
        ):
            result[k] = hd[k]
    result["quick"] = bool(args.quick)
    result["seconds"] = time.perf_counter() - t0
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
