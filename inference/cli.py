"""The ``pssm`` command line: ``demo``, ``fit``, ``report`` and ``info``.

``pssm fit CONFIG.toml`` reads three tables::

    [model]                 # what to fit
    kind = "hmm"            # hmm | hmm_glm | linear_gaussian | stochastic_volatility
    num_states = 3
    emissions = "poisson"   # hmm: poisson | gaussian | categorical

    [data]                  # one array: .npy, .npz (key = ...) or .csv/.tsv; relative to the config file
    path = "counts.npy"

    [fit]                   # how to fit it
    algorithm = "em"        # per kind, see `pssm fit --help`
    num_iters = 50
    seed = 0

and writes a run folder: a copy of the config, ``result.nc`` (the result as ArviZ ``InferenceData``),
``params.npz`` (point parameters by dotted name) and ``summary.json`` (also the last line printed).

Heavy modules (JAX, NumPyro, ArviZ, the models and algorithms) are imported only inside the subcommand that needs
them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "load_config", "main"]

ROOT = Path(__file__).resolve().parent.parent
DEMO_SCRIPT = Path("case_studies") / "brain_states.py"
DEMO_OUT = Path("case_studies") / "output" / "brain_states"


class ConfigError(ValueError):
    """A problem with a ``pssm fit`` configuration; the message names the offending key."""


# ----------------------------------------------------------------------------------------------- config schema
_MISSING = object()


@dataclass(frozen=True)
class Opt:
    """One configuration key: its type (``int``, ``float``, ``bool``, ``str``, ``list`` of str, ``dict``), default
    (``_MISSING``: required), allowed values and help text."""

    type: type
    default: Any = None
    choices: tuple = ()
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING


def _o(type_, default=None, choices=(), help=""):
    return Opt(type_, default, tuple(choices), help)


STICKY = {
    "transition_concentration": _o(float, 1.0, help="Dirichlet concentration of each transition row"),
    "stickiness": _o(float, 0.0, help="extra Dirichlet mass on self-transitions"),
    "initial": _o(str, "learned", ("learned", "fixed", "stationary"), help="initial-state distribution"),
}

MODEL_KEYS: dict[str, dict[str, Opt]] = {
    "hmm": {
        "num_states": _o(int, _MISSING, help="number of hidden states"),
        "emissions": _o(str, "poisson", ("poisson", "gaussian", "categorical"), help="emission family"),
        "covariance": _o(str, "full", ("full", "diagonal", "tied"), help="Gaussian emissions: covariance type"),
        "num_classes": _o(int, None, help="categorical emissions: classes (default: max(data) + 1)"),
        "self_transition": _o(float, 0.9, help="starting diagonal of the transition matrix"),
        **STICKY,
    },
    "hmm_glm": {
        "num_states": _o(int, _MISSING, help="number of hidden states"),
        "self_transition": _o(float, 0.95, help="starting diagonal of the transition matrix"),
        **STICKY,
        # every other key is a GLMEmissions setting (checked against its fields when the model is built)
    },
    "linear_gaussian": {
        "state_dim": _o(int, _MISSING, help="latent dimension"),
        "params": _o(dict, None, help="[model.params] table of LGSSMParams fields (default: random stable params)"),
        "spectral_radius": _o(float, 0.9, help="random params: spectral radius of the dynamics"),
    },
    "stochastic_volatility": {
        "mu": _o(float, -1.0, help="mean log-variance (starting/fixed value)"),
        "phi": _o(float, 0.95, help="persistence in (-1, 1)"),
        "sigma": _o(float, 0.3, help="volatility of the log-variance"),
    },
}

ALGORITHMS: dict[str, tuple[str, ...]] = {
    "hmm": ("em", "svi"),
    "hmm_glm": ("em", "svi"),
    "linear_gaussian": ("kalman", "mle", "particle_filter"),
    "stochastic_volatility": ("particle_filter", "pmmh"),
}

RESAMPLERS = ("systematic", "multinomial", "stratified", "residual")
FIT_COMMON = {
    "algorithm": _o(str, None, help="default: the first allowed for the model kind"),
    "seed": _o(int, 0, help="PRNG seed"),
    "x64": _o(bool, False, help="turn on float64 (jax_enable_x64) before fitting"),
}
FIT_KEYS: dict[str, dict[str, Opt]] = {
    "em": {
        "num_iters": _o(int, 100, help="maximum EM iterations"),
        "tol": _o(float, 1e-6, help="relative convergence tolerance on the objective"),
        "min_iters": _o(int, 1, help="iterations before the convergence test"),
        "num_restarts": _o(int, 1, help="EM runs from model.initialize; the best objective is kept"),
        "frozen": _o(list, [], help="dotted params paths held fixed, e.g. ['initial']"),
    },
    "svi": {
        "num_iters": _o(int, 1000, help="Adam steps"),
        "learning_rate": _o(float, 0.01),
        "guide": _o(str, "delta", ("delta", "normal"), help="delta = MAP, normal = mean-field posterior"),
        "frozen": _o(list, []),
    },
    "kalman": {"parallel": _o(bool, False, help="associative-scan (parallel-in-time) smoother")},
    "mle": {
        "num_iters": _o(int, 300, help="Adam steps on the exact Kalman log-likelihood + log prior"),
        "learning_rate": _o(float, 0.05),
        "frozen": _o(list, []),
    },
    "particle_filter": {
        "num_particles": _o(int, 1000),
        "resampling": _o(str, "systematic", RESAMPLERS),
        "ess_threshold": _o(float, 0.5, help="resample when ESS/N falls below"),
    },
    "pmmh": {
        "num_samples": _o(int, 1000, help="draws per chain after warm-up"),
        "num_particles": _o(int, 200),
        "num_warmup": _o(int, 500, help="adaptive warm-up steps"),
        "num_chains": _o(int, 2),
        "proposal_scale": _o(float, 0.1, help="initial random-walk scale (unconstrained space)"),
        "frozen": _o(list, [], help="leaves held at the [model] values, e.g. ['phi']"),
        "resampling": _o(str, "systematic", RESAMPLERS),
    },
}

DATA_KEYS = {
    "path": _o(str, _MISSING, help=".npy, .npz, .csv or .tsv; relative to the config file"),
    "key": _o(str, None, help=".npz: the array's name"),
    "columns": _o(list, None, help=".csv/.tsv: the columns to use (default: all)"),
    "header": _o(bool, True, help=".csv/.tsv: the first row holds column names"),
}
DATA_SUFFIXES = (".npy", ".npz", ".csv", ".tsv")
TABLES = ("model", "data", "fit")


def _allowed(values) -> str:
    return ", ".join(repr(v) for v in values)


def _check_value(where: str, key: str, value: Any, opt: Opt) -> Any:
    name = f"config [{where}].{key}"
    t = opt.type
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, t) and not (t in (int, float) and isinstance(value, bool))
    if t is list and ok and not all(isinstance(v, str) for v in value):
        ok = False
    if not ok:
        want = {list: "a list of strings", dict: "a table"}.get(t, t.__name__)
        raise ConfigError(f"{name}: expected {want}; got {value!r}.")
    if opt.choices and value not in opt.choices:
        raise ConfigError(f"{name}: got {value!r}; allowed: {_allowed(opt.choices)}.")
    return value


def _check_table(where: str, table: dict, keys: dict[str, Opt], *, extra_ok: bool = False, context: str = "") -> dict:
    """Values for ``keys`` (defaults filled in); unknown keys are an error unless ``extra_ok`` (returned under
    ``"_extra"``)."""
    out, extra = {}, {}
    for k, v in table.items():
        if k in keys:
            out[k] = _check_value(where, k, v, keys[k])
        elif extra_ok:
            extra[k] = v
        else:
            raise ConfigError(f"config [{where}]: unknown key {k!r}{context}; allowed: {_allowed(keys)}.")
    for k, opt in keys.items():
        if k not in out:
            if opt.required:
                raise ConfigError(f"config [{where}].{k}: missing (required).")
            out[k] = opt.default
    if extra_ok:
        out["_extra"] = extra
    return out


@dataclass
class Config:
    kind: str
    model: dict
    data: dict
    algorithm: str
    fit: dict
    path: Path
    raw: dict = field(repr=False, default_factory=dict)


def load_config(path: str | Path) -> Config:
    """Read and validate a ``pssm fit`` TOML file (:class:`ConfigError` names the offending key)."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path}: not valid TOML ({e}).") from None
    return validate_config(raw, path)


def validate_config(raw: dict, path: Path) -> Config:
    for k, v in raw.items():
        if k not in TABLES:
            raise ConfigError(f"config: unknown table or key {k!r}; allowed tables: {_allowed(TABLES)}.")
        if not isinstance(v, dict):
            raise ConfigError(f"config: {k!r} must be a table ([{k}]); got {v!r}.")
    for t in ("model", "data"):
        if t not in raw:
            raise ConfigError(f"config: missing table [{t}].")
    model = dict(raw["model"])
    if "kind" not in model:
        raise ConfigError(f"config [model].kind: missing (required); allowed: {_allowed(MODEL_KEYS)}.")
    kind = model.pop("kind")
    if kind not in MODEL_KEYS:
        raise ConfigError(f"config [model].kind: got {kind!r}; allowed: {_allowed(MODEL_KEYS)}.")
    model = _check_table("model", model, MODEL_KEYS[kind], extra_ok=kind == "hmm_glm", context=f" for kind {kind!r}")
    if kind == "hmm" and model["emissions"] != "gaussian" and "covariance" in raw["model"]:
        raise ConfigError("config [model].covariance: only for emissions = 'gaussian'.")
    data = _check_table("data", raw["data"], DATA_KEYS)
    fit = dict(raw.get("fit", {}))
    algorithm = fit.pop("algorithm", None) or ALGORITHMS[kind][0]
    if algorithm not in ALGORITHMS[kind]:
        raise ConfigError(
            f"config [fit].algorithm: got {algorithm!r} for kind {kind!r}; allowed: {_allowed(ALGORITHMS[kind])}."
        )
    keys = {k: v for k, v in FIT_COMMON.items() if k != "algorithm"} | FIT_KEYS[algorithm]
    fit = _check_table("fit", fit, keys, context=f" for algorithm {algorithm!r}")
    return Config(kind, model, data, algorithm, fit, path.resolve(), raw)


# ------------------------------------------------------------------------------------------------------ data
def load_data(cfg: Config):
    """The ``[data]`` array as NumPy (paths relative to the config file)."""
    import numpy as np

    d = cfg.data
    p = Path(d["path"]).expanduser()
    p = p if p.is_absolute() else cfg.path.parent / p
    if p.suffix.lower() not in DATA_SUFFIXES:
        raise ConfigError(f"config [data].path: got {d['path']!r}; allowed suffixes: {_allowed(DATA_SUFFIXES)}.")
    if not p.is_file():
        raise ConfigError(f"config [data].path: file not found: {p}")
    for k, suffixes in (("key", (".npz",)), ("columns", (".csv", ".tsv"))):
        if d[k] is not None and p.suffix.lower() not in suffixes:
            raise ConfigError(f"config [data].{k}: only for {'/'.join(suffixes)} files.")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            names = list(z.files)
            if d["key"] is None:
                if len(names) != 1:
                    raise ConfigError(
                        f"config [data].key: {p.name} holds {len(names)} arrays; name one of {_allowed(names)}."
                    )
                arr = z[names[0]]
            elif d["key"] not in names:
                raise ConfigError(f"config [data].key: got {d['key']!r}; allowed: {_allowed(names)}.")
            else:
                arr = z[d["key"]]
    else:
        import pandas as pd

        df = pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",", header=0 if d["header"] else None)
        if d["columns"] is not None:
            if not d["header"]:
                raise ConfigError("config [data].columns: needs header = true.")
            missing = [c for c in d["columns"] if c not in df.columns]
            if missing:
                raise ConfigError(
                    f"config [data].columns: {missing} not in {p.name}; allowed: {_allowed(map(str, df.columns))}."
                )
            df = df[d["columns"]]
        arr = df.to_numpy()
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise ConfigError(f"config [data].path: {p.name} holds non-numeric data (dtype {arr.dtype}).")
    return arr, p


def _shape_data(cfg: Config, arr):
    """Arrange the array for the model: (T, D) or (B, T, D) for HMMs and the LGSSM, (T,) for SV."""
    import numpy as np

    kind = cfg.kind
    if kind == "stochastic_volatility":
        arr = np.squeeze(arr)
        if arr.ndim != 1:
            raise ConfigError(f"config [data].path: stochastic volatility needs one series (T,); got {arr.shape}.")
        return arr
    if arr.ndim == 1:
        arr = arr[:, None]
    allowed = (2, 3) if kind in ("hmm", "hmm_glm") else (2,)
    if arr.ndim not in allowed:
        want = "(T, D) or (B, T, D)" if len(allowed) == 2 else "(T, D)"
        raise ConfigError(f"config [data].path: kind {kind!r} needs an array {want}; got shape {arr.shape}.")
    return arr


# ----------------------------------------------------------------------------------------------------- models
def build_model(cfg: Config, data):
    """The model and starting params for ``cfg`` (starting params ``None`` when the fit initialises itself)."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from pssm import models as M

    m, kind = cfg.model, cfg.kind
    key = jax.random.PRNGKey(cfg.fit["seed"])
    if kind in ("hmm", "hmm_glm") and m["num_states"] < 1:
        raise ConfigError(f"config [model].num_states: must be >= 1; got {m['num_states']}.")
    if kind == "hmm":
        sticky = dict(
            concentration=m["transition_concentration"],
            stickiness=m["stickiness"],
            self_transition=m["self_transition"],
        )
        D = data.shape[-1]
        if m["emissions"] == "poisson":
            em = M.PoissonEmissions(D)
        elif m["emissions"] == "gaussian":
            em = M.GaussianEmissions(D, covariance=m["covariance"])
        else:
            if not np.all(data == np.round(data)) or data.min() < 0:
                raise ConfigError("config [model].emissions: 'categorical' needs non-negative integer data.")
            C = m["num_classes"] if m["num_classes"] is not None else int(data.max()) + 1
            em = M.CategoricalEmissions(D, C)
        model = M.HMM(m["num_states"], em, M.InitialDistribution(m["initial"]), M.StickyTransitions(**sticky))
        return model, None
    if kind == "hmm_glm":
        fields = {f.name for f in dataclasses.fields(M.GLMEmissions)} - {"num_neurons"}
        settings = dict(m["_extra"])
        for k in settings:
            if k not in fields:
                allowed = sorted(set(MODEL_KEYS["hmm_glm"]) | fields)
                raise ConfigError(
                    f"config [model]: unknown key {k!r} for kind 'hmm_glm'; allowed: {_allowed(allowed)}."
                )
        if isinstance(settings.get("basis"), str) and settings["basis"].lower() == "none":
            settings["basis"] = None
        try:
            model = M.HMMGLM(
                m["num_states"],
                data.shape[-1],
                transition_concentration=m["transition_concentration"],
                stickiness=m["stickiness"],
                self_transition=m["self_transition"],
                initial=m["initial"],
                **settings,
            )
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config [model] (kind 'hmm_glm'): {e}") from None
        return model, None
    if kind == "linear_gaussian":
        model = M.LinearGaussianSSM(state_dim=m["state_dim"], emission_dim=data.shape[-1])
        if m["params"] is None:
            return model, model.random_params(key, spectral_radius=m["spectral_radius"])
        names = M.LGSSMParams._fields
        for k in m["params"]:
            if k not in names:
                raise ConfigError(f"config [model.params]: unknown key {k!r}; allowed: {_allowed(names)}.")
        try:
            params = model.make_params(**{k: jnp.asarray(v, float) for k, v in m["params"].items()})
            model.check_params(params) if hasattr(model, "check_params") else None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config [model.params]: {e}") from None
        return model, params
    model = M.StochasticVolatility()
    if not -1.0 < m["phi"] < 1.0:
        raise ConfigError(f"config [model].phi: must lie in (-1, 1); got {m['phi']}.")
    if not m["sigma"] > 0:
        raise ConfigError(f"config [model].sigma: must be > 0; got {m['sigma']}.")
    return model, model.make_params(mu=m["mu"], phi=m["phi"], sigma=m["sigma"])


# ------------------------------------------------------------------------------------------------------- fits
def _named(tree) -> dict:
    import jax
    import numpy as np

    from pssm.params import leaf_names

    return dict(zip(leaf_names(tree), (np.asarray(v) for v in jax.tree.leaves(tree)), strict=True))


def run_fit(cfg: Config, data) -> tuple[Any, dict, dict]:
    """Fit; returns ``(idata, point params by name, summary fields)``."""
    import jax
    import numpy as np

    from pssm import to_arviz

    f, alg = cfg.fit, cfg.algorithm
    model, params = build_model(cfg, data)
    key = jax.random.PRNGKey(f["seed"])
    k_init, k_fit = jax.random.split(key)
    info: dict[str, Any] = {}
    frozen = tuple(f.get("frozen") or ())
    if frozen:
        from pssm.params import freeze

        try:
            freeze(model.param_spec(), *frozen)
        except KeyError as e:
            raise ConfigError(f"config [fit].frozen: {e.args[0] if e.args else e}") from None
    if alg == "em":
        from pssm.inference import fit_em, fit_em_restarts

        opts = dict(num_iters=f["num_iters"], tol=f["tol"], min_iters=f["min_iters"], frozen=frozen)
        if f["num_restarts"] > 1:
            res, runs = fit_em_restarts(k_fit, model, data, num_restarts=f["num_restarts"], **opts)
            info["restart_objectives"] = [float(r.log_objective[-1]) for r in runs]
        else:
            res = fit_em(k_fit, model, model.initialize(k_init, data), data, **opts)
        info |= {
            "log_likelihood": float(res.posterior.log_likelihood.sum()),
            "log_objective": float(res.log_objective[-1]),
            "num_iters": int(res.num_iters),
            "converged": bool(res.converged),
            "seconds_per_iter": float(res.seconds_per_iter),
        }
        return to_arviz(res, model=model), _named(res.params), info
    if alg == "svi":
        from pssm.inference import fit_svi, marginal_log_likelihood

        p0 = model.initialize(k_init, data)
        res = fit_svi(
            k_fit,
            model,
            p0,
            data,
            num_iters=f["num_iters"],
            learning_rate=f["learning_rate"],
            guide=f["guide"],
            frozen=frozen,
        )
        info |= {
            "log_likelihood": float(marginal_log_likelihood(model, res.params, data).sum()),
            "final_loss": float(res.losses[-1]),
            "num_iters": f["num_iters"],
        }
        kw = {"key": k_init} if f["guide"] == "normal" else {}
        return to_arviz(res, **kw), _named(res.params), info
    if alg in ("kalman", "mle"):
        from pssm.inference import kalman_smoother

        if alg == "mle":
            params, trace = _lgssm_mle(model, params, data, f["num_iters"], f["learning_rate"], frozen)
            info |= {"num_iters": f["num_iters"], "mle_log_objective_first_last": [trace[0], trace[-1]]}
        post = kalman_smoother(params, data, parallel=f.get("parallel", False))
        info["log_likelihood"] = float(post.log_likelihood)
        return to_arviz(post, emissions=data), _named(params), info
    if alg == "particle_filter":
        from pssm.inference.smc import particle_filter

        res = particle_filter(
            k_fit,
            model,
            params,
            data,
            f["num_particles"],
            resampling=f["resampling"],
            ess_threshold=f["ess_threshold"],
        )
        info |= {
            "log_likelihood": float(res.log_likelihood),
            "log_likelihood_is_estimate": True,
            "min_ess": float(np.min(res.ess)),
            "num_resampled": int(np.sum(res.resampled)),
            "collapsed": bool(res.collapsed),
        }
        return to_arviz(res), _named(params), info
    if alg == "pmmh":
        from pssm.inference import pmmh

        res = pmmh(
            k_fit,
            model,
            params,
            data,
            frozen=frozen,
            num_samples=f["num_samples"],
            num_particles=f["num_particles"],
            num_warmup=f["num_warmup"],
            num_chains=f["num_chains"],
            proposal_scale=f["proposal_scale"],
            resampling=f["resampling"],
        )
        means = {k: np.asarray(v).mean(axis=(0, 1)) for k, v in res.samples.items()}
        point = _named(params) | means
        info |= {
            "log_likelihood": float(np.mean(np.asarray(res.log_likelihood)[:, -1])),
            "log_likelihood_is_estimate": True,
            "acceptance_rate": [round(float(a), 4) for a in np.asarray(res.acceptance_rate)],
            "posterior_mean": {k: np.asarray(v).tolist() for k, v in means.items()},
            "num_samples": f["num_samples"],
        }
        return to_arviz(res), point, info
    raise AssertionError(alg)  # unreachable: validated


def _lgssm_mle(model, params, data, num_iters, learning_rate, frozen):
    """MAP/ML for the linear Gaussian SSM: Adam on the exact Kalman log-likelihood + log prior over the
    unconstrained space of the trainable leaves (``numpyro`` bijections from ``model.param_spec()``)."""
    import jax
    import jax.numpy as jnp
    import optax
    from numpyro.distributions.transforms import biject_to

    from pssm.inference import kalman_log_likelihood
    from pssm.params import freeze, is_spec

    spec = model.param_spec()
    spec = freeze(spec, *frozen) if frozen else spec
    specs, treedef = jax.tree_util.tree_flatten(spec, is_leaf=is_spec)
    leaves_t = [biject_to(sp.constraint) for sp in specs]
    leaves_m = [bool(sp.trainable) for sp in specs]
    leaves_p = treedef.flatten_up_to(params)
    u0 = [t.inv(p) if m else p for t, m, p in zip(leaves_t, leaves_m, leaves_p, strict=True)]
    y = jnp.asarray(data)

    def to_params(u):
        return jax.tree_util.tree_unflatten(
            treedef, [t(x) if m else x for t, m, x in zip(leaves_t, leaves_m, u, strict=True)]
        )

    def loss(u):
        p = to_params(u)
        return -(kalman_log_likelihood(p, y) + model.log_prior(p)) / y.shape[0]

    opt = optax.adam(learning_rate)

    @jax.jit
    def step(u, s):
        val, g = jax.value_and_grad(loss)(u)
        g = [gi if m else jnp.zeros_like(gi) for gi, m in zip(g, leaves_m, strict=True)]
        upd, s = opt.update(g, s, u)
        return optax.apply_updates(u, upd), s, val

    u, s, trace = u0, opt.init(u0), []
    for _ in range(num_iters):
        u, s, val = step(u, s)
        trace.append(-float(val) * y.shape[0])
    return to_params(u), trace


def _jsonable(x):
    import numpy as np

    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    return x


def cmd_fit(args) -> int:
    cfg = load_config(args.config)
    run_dir = Path(args.out) if args.out else cfg.path.parent / f"{cfg.path.stem}_run"
    if cfg.fit["x64"]:
        import jax

        jax.config.update("jax_enable_x64", True)
    import jax
    import numpy as np

    raw, data_path = load_data(cfg)
    data = _shape_data(cfg, raw)
    ftype = np.float64 if jax.config.jax_enable_x64 else np.float32
    if not (cfg.kind == "hmm" and cfg.model["emissions"] == "categorical"):
        data = data.astype(ftype)
    else:
        data = data.astype(np.int32)
    t0 = time.perf_counter()
    idata, point, info = run_fit(cfg, data)
    seconds = time.perf_counter() - t0
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cfg.path, run_dir / "config.toml")
    idata.to_netcdf(str(run_dir / "result.nc"))
    np.savez(run_dir / "params.npz", **point)
    summary = {
        "command": "fit",
        "config": str(cfg.path),
        "run_dir": str(run_dir.resolve()),
        "model": cfg.kind,
        "algorithm": cfg.algorithm,
        "data": {"path": str(data_path), "shape": list(data.shape), "dtype": str(data.dtype)},
        **info,
        "seconds": round(seconds, 3),
        "params": {k: list(np.shape(v)) for k, v in point.items()},
        "groups": list(idata.groups()),
        "x64": bool(jax.config.jax_enable_x64),
        "backend": jax.default_backend(),
        "files": ["config.toml", "result.nc", "params.npz", "summary.json"],
    }
    summary = _jsonable(summary)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


# ------------------------------------------------------------------------------------------------ other cmds
def find_demo_script() -> Path | None:
    """``case_studies/brain_states.py`` of the repository checkout this package was installed from (editable)."""
    p = ROOT / DEMO_SCRIPT
    return p if p.is_file() else None


def cmd_demo(args) -> int:
    script = find_demo_script()
    if script is None:
        print(
            f"pssm demo: error: {DEMO_SCRIPT} not found next to the installed package ({ROOT}). The demo needs the "
            "repository checkout: clone it and install with `pip install -e .` (or run `make demo` there).",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out) if args.out else script.parent.parent / DEMO_OUT
    argv = (["--quick"] if args.quick else []) + ["--out", str(out)] + list(args.script_args)
    load_demo(script).main(argv)  # prints its JSON summary as the last line
    return 0


def load_demo(script: Path):
    """Import the demo script as a module (registered in ``sys.modules`` first: its dataclasses need it)."""
    import importlib.util

    name = "pssm_demo_brain_states"
    spec = importlib.util.spec_from_file_location(name, script)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def cmd_report(args) -> int:
    run_dir = Path(args.run_dir)
    result = run_dir / "result.nc"
    if not result.is_file():
        print(f"pssm report: error: {result} not found (make one with `pssm fit CONFIG.toml`).", file=sys.stderr)
        return 2
    try:
        from pssm.reporting import report
    except ImportError as e:
        print(f"pssm report: error: this installation has no pssm.reporting.report ({e}).", file=sys.stderr)
        return 1
    import arviz as az

    title = args.title
    summary_path = run_dir / "summary.json"
    if title is None and summary_path.is_file():
        s = json.loads(summary_path.read_text())
        title = f"{s.get('model', 'model')} fitted by {s.get('algorithm', '?')} ({Path(s.get('config', run_dir)).name})"
    out = Path(args.out) if args.out else run_dir / "report.html"
    idata = az.from_netcdf(str(result))
    path = report(idata, out, title=title)
    print(str(path if path is not None else out))
    return 0


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def collect_info() -> dict:
    import platform

    import jax

    versions = {name: _version(name) for name in ("pssm", "jax", "jaxlib", "numpyro", "arviz", "numpy")}
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "default_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_count": jax.device_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "precision": "float64" if jax.config.jax_enable_x64 else "float32",
        "repository": str(ROOT) if find_demo_script() else None,
    }


def cmd_info(args) -> int:
    info = collect_info()
    if args.json:
        print(json.dumps(info))
        return 0
    lines = [f"{k:<10} {v or 'not installed'}" for k, v in info["versions"].items()]
    lines += [
        f"{'python':<10} {info['python']} ({info['platform']})",
        f"{'backend':<10} {info['default_backend']}",
        f"{'devices':<10} {', '.join(info['devices'])}",
        f"{'precision':<10} {info['precision']} (jax_enable_x64 {'on' if info['x64'] else 'off'})",
        f"{'checkout':<10} {info['repository'] or 'none (non-editable install: pssm demo unavailable)'}",
    ]
    print("\n".join(lines))
    return 0


# ------------------------------------------------------------------------------------------------------ parser
def _fit_epilog() -> str:
    rows = []
    for kind, algs in ALGORITHMS.items():
        keys = ", ".join(MODEL_KEYS[kind]) + (", and any GLMEmissions setting" if kind == "hmm_glm" else "")
        model_line = textwrap.fill(f"[model] {keys}", 88, initial_indent=" " * 25, subsequent_indent=" " * 33)
        rows.append(f"  {kind:<22}{model_line[24:]}\n  {'':<22} [fit] algorithm: {' | '.join(algs)}")
    fit_rows = [f"  {alg:<16} {', '.join(keys)}" for alg, keys in FIT_KEYS.items()]
    return (
        "model kinds:\n"
        + "\n".join(rows)
        + "\n\n[fit] options by algorithm (all also take seed, x64):\n"
        + "\n".join(fit_rows)
        + "\n\n[data]: path (.npy/.npz/.csv/.tsv, relative to the config), key (.npz), columns and header "
        "(.csv/.tsv).\n\nexample:\n"
        '  [model]\n  kind = "hmm"\n  num_states = 3\n  emissions = "poisson"\n\n'
        '  [data]\n  path = "counts.npy"\n\n  [fit]\n  algorithm = "em"\n  num_iters = 50\n  seed = 0\n'
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="pssm",
        description="Probabilistic state-space models on JAX and NumPyro: run the demo, fit a model from a TOML "
        "config, write an HTML report of a fit, show the installation.",
        epilog="Run `pssm COMMAND --help` for a command's options.",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser(
        "demo",
        help="run the flagship case study (switching brain states, bundled NWB recording)",
        description="Run case_studies/brain_states.py from the repository checkout: switching HMM-GLMs on the "
        "bundled ADn/CA1 recording. Writes figures, a report and summary.json under --out; the last line printed "
        "is that JSON. Needs the repository (an editable install).",
        epilog="Options after `--` go to the script unchanged, e.g. `pssm demo -- --states 2 3`.",
    )
    d.add_argument("--quick", action="store_true", help="small, fast settings (what the tests run)")
    d.add_argument(
        "--out", metavar="DIR", help=f"output folder (default: {DEMO_OUT} in the repository checkout)", default=None
    )
    d.add_argument("script_args", nargs="*", metavar="-- ARGS", help="extra options for brain_states.py")
    d.set_defaults(func=cmd_demo)

    f = sub.add_parser(
        "fit",
        help="fit a model described by a TOML config; writes a run folder",
        description=textwrap.fill(
            "Fit the [model] to the [data] with the [fit] algorithm of CONFIG.toml. Writes RUN_DIR with "
            "config.toml (a copy), result.nc (ArviZ InferenceData), params.npz (point parameters by dotted name) "
            "and summary.json (log-likelihood, iterations, seconds, shapes), whose JSON is also the last line "
            "printed.",
            88,
        ),
        epilog=_fit_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("config", metavar="CONFIG.toml", help="the run's configuration")
    f.add_argument("--out", metavar="RUN_DIR", help="run folder (default: <config stem>_run next to the config)")
    f.set_defaults(func=cmd_fit)

    r = sub.add_parser(
        "report",
        help="write an HTML report of a fit's run folder",
        description="Load RUN_DIR/result.nc and write a self-contained HTML diagnostics report "
        "(pssm.reporting.report); prints the report's path.",
    )
    r.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `pssm fit`")
    r.add_argument("--out", metavar="PATH", help="the HTML file (default: RUN_DIR/report.html)")
    r.add_argument("--title", help="report title (default: from RUN_DIR/summary.json)")
    r.set_defaults(func=cmd_report)

    i = sub.add_parser(
        "info",
        help="versions, JAX devices and precision",
        description="Print the versions of pssm, jax, jaxlib, numpyro, arviz, numpy and Python, the JAX devices "
        "and default backend, and the floating-point precision (jax_enable_x64).",
    )
    i.add_argument("--json", action="store_true", help="one JSON object instead of text")
    i.set_defaults(func=cmd_info)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pssm`` console script; returns the exit status (0 success, 2 usage/config error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"pssm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
