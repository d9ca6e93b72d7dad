"""Deep Markov model (Krishnan, Shalit & Sontag, 2017, "DKS" structured inference network) in Pyro/PyTorch.

This is the Pyro peer of our JAX deep Markov model, run inside its own virtual environment
(``benchmarks/.venv-pyro``, torch 2.13 CPU + pyro-ppl 1.9.2) by :mod:`benchmarks.peers.pyro_dmm`.  It follows the
design of Pyro's ``examples/dmm.py`` (written afresh from the paper; same architecture and default settings):

* model: ``z_t ~ N(loc, scale)`` from a gated transition of ``z_{t-1}`` (``z_0`` a learned vector), ``x_t ~
  Bernoulli(emitter(z_t))`` over 88 notes, one ``pyro.sample`` site per time step inside ``pyro.markov`` and a
  ``pyro.plate`` over the minibatch; ragged sequences are handled with ``.mask`` of shape (B, 1) per step;
* guide: a one-layer ReLU ``nn.RNN`` (learned ``h_0``) run over the time-reversed sequences, packed with
  ``pack_padded_sequence`` so that ``h_t`` summarises ``x_{t:T_b}``, and a combiner of ``h_t`` with ``z_{t-1}``
  (``z_q_0`` a learned vector);
* KL annealing: ``poutine.scale(annealing_factor)`` around the latent sites of model *and* guide (emissions are never
  scaled), linear from ``minimum_annealing_factor`` to 1, interpolated per minibatch as in the paper's code:
  ``af = maf + (1 - maf) * (mb + epoch * n_mb + 1) / (annealing_epochs * n_mb)`` while ``epoch < annealing_epochs``;
* loss: ``Trace_ELBO`` (one sample, KL terms estimated by sampling), summed -- not averaged -- over the minibatch;
  optimiser ``ClippedAdam`` (element-wise gradient clamp to ``+-clip_norm``, then coupled L2 ``weight_decay``, lr
  multiplied by ``lrd`` at the start of every step), all parameters in one ``pyro.module``;
* minibatches: ``numpy.random.default_rng(seed).permutation(N)`` drawn afresh each epoch, consecutive chunks of
  ``batch_size`` (the last one smaller); each minibatch is cut to its own longest sequence.

Differences from Pyro's example (deliberate): the emitter returns logits (``Bernoulli(logits=...)``) rather than
probabilities; the padded, time-reversed copies and masks of each split are built once at load time (Pyro's loader
rebuilds them per minibatch in numpy); ``enforce_sorted=False`` instead of sorting each minibatch by length (same
loss); evaluation averages several independent ELBO passes instead of one.  No RNN dropout (one layer), no IAFs, no
JIT.  Parameter initialisation is PyTorch's default: ``nn.Linear`` weights and biases ``U(-1/sqrt(fan_in),
1/sqrt(fan_in))``; ``nn.RNN`` weights and both biases ``U(-1/sqrt(rnn_dim), 1/sqrt(rnn_dim))``; the transition's
``lin_z_to_loc`` identity weight / zero bias; ``z_0``, ``z_q_0``, ``h_0`` zeros.

Timing: ``epoch_seconds`` is the wall time of each training epoch (minibatch assembly + ``svi.step``), excluding data
loading and evaluation.  Reported losses are nats per time step (negative ELBO summed over sequences / sum of lengths),
positive, lower is better; ``train_loss_per_step`` is the annealed training loss accumulated over each epoch (Pyro's
``epoch_nll / N_train_time_slices``), ``valid/test_elbo_per_step`` use annealing factor 1 after training.

Data: an ``.npz`` with ``{split}_rolls`` (uint8, (sum of lengths, 88)) and ``{split}_lengths`` (int32) for split in
train/valid/test, sequences concatenated in order.  The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("data", help=".npz with {train,valid,test}_rolls and _lengths")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--z-dim", type=int, default=100)
    p.add_argument("--emission-dim", type=int, default=100)
    p.add_argument("--transition-dim", type=int, default=200)
    p.add_argument("--rnn-dim", type=int, default=600)
    p.add_argument("--learning-rate", type=float, default=3e-4)
    p.add_argument("--beta1", type=float, default=0.96)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--clip-norm", type=float, default=10.0)
    p.add_argument("--lr-decay", type=float, default=0.99996)
    p.add_argument("--weight-decay", type=float, default=2.0)
    p.add_argument("--annealing-epochs", type=int, default=1000)
    p.add_argument("--minimum-annealing-factor", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpus", type=str, default=None, help="comma-separated CPU ids to pin this process to")
    p.add_argument("--num-threads", type=int, default=None, help="torch threads (default: number of usable CPUs)")
    p.add_argument("--max-train", type=int, default=None, help="use only the first N training sequences")
    p.add_argument("--eval-passes", type=int, default=10, help="independent ELBO passes averaged in evaluation")
    p.add_argument("--eval-batch-size", type=int, default=256, help="sequences per evaluation batch")
    p.add_argument("--no-eval", action="store_true", help="skip the valid/test evaluation")
    return p.parse_args(argv)


if __name__ == "__main__":
    # Pin and size the thread pools before torch is imported (and starts any thread).
    _ARGS = parse_args()
    if _ARGS.cpus:
        os.sched_setaffinity(0, {int(c) for c in _ARGS.cpus.split(",")})
    _NT = _ARGS.num_threads or len(os.sched_getaffinity(0))
    for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_v] = str(_NT)

import numpy as np  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import pyro.poutine as poutine  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from pyro.infer import SVI, Trace_ELBO  # noqa: E402
from pyro.optim import ClippedAdam  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

NOTES = 88


class Emitter(nn.Module):
    """``p(x_t | z_t)``: two ReLU layers, then 88 Bernoulli logits."""

    def __init__(self, input_dim: int, z_dim: int, emission_dim: int):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, emission_dim)
        self.lin_hidden_to_hidden = nn.Linear(emission_dim, emission_dim)
        self.lin_hidden_to_input = nn.Linear(emission_dim, input_dim)

    def forward(self, z):
        h = torch.relu(self.lin_z_to_hidden(z))
        h = torch.relu(self.lin_hidden_to_hidden(h))
        return self.lin_hidden_to_input(h)


class GatedTransition(nn.Module):
    """``p(z_t | z_{t-1})``: gated mix of a linear map (identity at init) and a nonlinear proposed mean."""

    def __init__(self, z_dim: int, transition_dim: int):
        super().__init__()
        self.lin_gate_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_gate_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_proposed_mean_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_proposed_mean_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_sig = nn.Linear(z_dim, z_dim)
        self.lin_z_to_loc = nn.Linear(z_dim, z_dim)
        with torch.no_grad():
            self.lin_z_to_loc.weight.copy_(torch.eye(z_dim))
            self.lin_z_to_loc.bias.zero_()

    def forward(self, z_prev):
        gate = torch.sigmoid(self.lin_gate_hidden_to_z(torch.relu(self.lin_gate_z_to_hidden(z_prev))))
        proposed_mean = self.lin_proposed_mean_hidden_to_z(torch.relu(self.lin_proposed_mean_z_to_hidden(z_prev)))
        loc = (1 - gate) * self.lin_z_to_loc(z_prev) + gate * proposed_mean
        scale = nn.functional.softplus(self.lin_sig(torch.relu(proposed_mean)))
        return loc, scale


class Combiner(nn.Module):
    """``q(z_t | z_{t-1}, x_{t:T})`` from ``z_{t-1}`` and the backward RNN state ``h_t``."""

    def __init__(self, z_dim: int, rnn_dim: int):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, rnn_dim)
        self.lin_hidden_to_loc = nn.Linear(rnn_dim, z_dim)
        self.lin_hidden_to_scale = nn.Linear(rnn_dim, z_dim)

    def forward(self, z_prev, h_rnn):
        h = 0.5 * (torch.tanh(self.lin_z_to_hidden(z_prev)) + h_rnn)
        return self.lin_hidden_to_loc(h), nn.functional.softplus(self.lin_hidden_to_scale(h))


class DMM(nn.Module):
    """Model and guide of the deep Markov model; every parameter is registered through ``pyro.module``."""

    def __init__(self, input_dim=NOTES, z_dim=100, emission_dim=100, transition_dim=200, rnn_dim=600):
        super().__init__()
        self.emitter = Emitter(input_dim, z_dim, emission_dim)
        self.trans = GatedTransition(z_dim, transition_dim)
        self.combiner = Combiner(z_dim, rnn_dim)
        self.rnn = nn.RNN(input_size=input_dim, hidden_size=rnn_dim, nonlinearity="relu", batch_first=True)
        self.z_0 = nn.Parameter(torch.zeros(z_dim))
        self.z_q_0 = nn.Parameter(torch.zeros(z_dim))
        self.h_0 = nn.Parameter(torch.zeros(1, 1, rnn_dim))

    def model(self, x, x_rev_packed, rev_index, mask, annealing_factor=1.0):
        pyro.module("dmm", self)
        batch, t_max = mask.shape
        z_prev = self.z_0.expand(batch, self.z_0.size(0))
        with pyro.plate("z_minibatch", batch):
            for t in pyro.markov(range(t_max)):
                m = mask[:, t : t + 1]
                loc, scale = self.trans(z_prev)
                with poutine.scale(scale=annealing_factor):
                    z_t = pyro.sample(f"z_{t + 1}", dist.Normal(loc, scale).mask(m).to_event(1))
                pyro.sample(
                    f"obs_x_{t + 1}", dist.Bernoulli(logits=self.emitter(z_t)).mask(m).to_event(1), obs=x[:, t, :]
                )
                z_prev = z_t

    def guide(self, x, x_rev_packed, rev_index, mask, annealing_factor=1.0):
        pyro.module("dmm", self)
        batch, t_max = mask.shape
        h_0 = self.h_0.expand(1, batch, self.rnn.hidden_size).contiguous()
        out, _ = self.rnn(x_rev_packed, h_0)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=t_max)
        # undo the per-sequence time reversal: h[b, t] = state after reading x[b, T_b - 1], ..., x[b, t]
        h_rnn = torch.gather(out, 1, rev_index.unsqueeze(-1).expand(-1, -1, out.size(-1)))
        z_prev = self.z_q_0.expand(batch, self.z_q_0.size(0))
        with pyro.plate("z_minibatch", batch):
            for t in pyro.markov(range(t_max)):
                loc, scale = self.combiner(z_prev, h_rnn[:, t, :])
                with poutine.scale(scale=annealing_factor):
                    z_t = pyro.sample(f"z_{t + 1}", dist.Normal(loc, scale).mask(mask[:, t : t + 1]).to_event(1))
                z_prev = z_t


class Split:
    """One data split, padded to its longest sequence, with time-reversed copies, reversal indices and masks."""

    def __init__(self, rolls: np.ndarray, lengths: np.ndarray):
        lengths = np.asarray(lengths, dtype=np.int64)
        n = len(lengths)
        t_max = int(lengths.max()) if n else 0
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if n else np.zeros(0, np.int64)
        t = np.arange(t_max)
        valid = t[None, :] < lengths[:, None]
        rev = np.where(valid, lengths[:, None] - 1 - t[None, :], t[None, :])
        x = np.zeros((n, t_max, rolls.shape[1]), dtype=np.float32)
        x[valid] = rolls[(starts[:, None] + t[None, :])[valid]]
        self.n = n
        self.num_steps = int(lengths.sum())
        self.lengths = torch.from_numpy(lengths)
        self.x = torch.from_numpy(x)
        self.rev_index = torch.from_numpy(rev)
        self.x_rev = torch.gather(self.x, 1, self.rev_index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        self.mask = torch.from_numpy(valid)

    def minibatch(self, idx: np.ndarray):
        idx_t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        lengths = self.lengths[idx_t]
        t_b = int(lengths.max())
        x = self.x[idx_t, :t_b]
        x_rev = pack_padded_sequence(self.x_rev[idx_t, :t_b], lengths, batch_first=True, enforce_sorted=False)
        return x, x_rev, self.rev_index[idx_t, :t_b], self.mask[idx_t, :t_b]


def load_data(path: str, max_train: int | None = None) -> dict[str, Split]:
    d = np.load(path)
    out = {}
    for split in ("train", "valid", "test"):
        rolls, lengths = d[f"{split}_rolls"], d[f"{split}_lengths"].astype(np.int64)
        if split == "train" and max_train is not None and max_train < len(lengths):
            lengths = lengths[:max_train]
            rolls = rolls[: int(lengths.sum())]
        out[split] = Split(rolls, lengths)
    return out


def annealing_factor(epoch: int, which_mb: int, n_mb: int, annealing_epochs: int, min_af: float) -> float:
    if annealing_epochs > 0 and epoch < annealing_epochs:
        return min_af + (1.0 - min_af) * float(which_mb + epoch * n_mb + 1) / float(annealing_epochs * n_mb)
    return 1.0


def evaluate(svi: SVI, split: Split, passes: int, batch_size: int) -> list[float]:
    """Negative ELBO per time step (annealing factor 1) for each of ``passes`` independent passes over ``split``."""
    res = []
    for _ in range(passes):
        total = 0.0
        for start in range(0, split.n, batch_size):
            idx = np.arange(start, min(start + batch_size, split.n))
            total += svi.evaluate_loss(*split.minibatch(idx), 1.0)
        res.append(total / split.num_steps)
    return res


def run(args: argparse.Namespace) -> dict:
    num_threads = args.num_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(num_threads)
    t_load = time.perf_counter()
    data = load_data(args.data, args.max_train)
    train = data["train"]
    load_seconds = time.perf_counter() - t_load

    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    dmm = DMM(NOTES, args.z_dim, args.emission_dim, args.transition_dim, args.rnn_dim)
    optim = ClippedAdam(
        {
            "lr": args.learning_rate,
            "betas": (args.beta1, args.beta2),
            "clip_norm": args.clip_norm,
            "lrd": args.lr_decay,
            "weight_decay": args.weight_decay,
        }
    )
    svi = SVI(dmm.model, dmm.guide, optim, loss=Trace_ELBO())

    rng = np.random.default_rng(args.seed)
    n_mb = math.ceil(train.n / args.batch_size)
    epoch_seconds, train_loss = [], []
    for epoch in range(args.epochs):
        perm = rng.permutation(train.n)
        t0 = time.perf_counter()
        total = 0.0
        for mb in range(n_mb):
            af = annealing_factor(epoch, mb, n_mb, args.annealing_epochs, args.minimum_annealing_factor)
            total += svi.step(*train.minibatch(perm[mb * args.batch_size : (mb + 1) * args.batch_size]), af)
        epoch_seconds.append(time.perf_counter() - t0)
        train_loss.append(total / train.num_steps)
        print(
            f"[epoch {epoch:04d}] loss/step {train_loss[-1]:.4f}  af {af:.4f}  ({epoch_seconds[-1]:.2f} s)",
            file=sys.stderr,
            flush=True,
        )

    out = {
        "epoch_seconds": epoch_seconds,
        "median_epoch_seconds": float(np.median(epoch_seconds)) if epoch_seconds else None,
        "train_loss_per_step": train_loss,
    }
    t_eval = time.perf_counter()
    for split in ("valid", "test"):
        if args.no_eval or data[split].n == 0:
            out[f"{split}_elbo_per_step"], out[f"{split}_elbo_per_step_passes"] = None, []
            continue
        passes = evaluate(svi, data[split], args.eval_passes, args.eval_batch_size)
        out[f"{split}_elbo_per_step"] = float(np.mean(passes))
        out[f"{split}_elbo_per_step_passes"] = passes
        print(f"[eval] {split} -ELBO/step {out[f'{split}_elbo_per_step']:.4f}", file=sys.stderr, flush=True)
    out.update(
        {
            "eval_seconds": time.perf_counter() - t_eval,
            "load_seconds": load_seconds,
            "eval_passes": args.eval_passes,
            "num_params": sum(p.numel() for p in dmm.parameters()),
            "torch_version": torch.__version__,
            "pyro_version": pyro.__version__,
            "num_threads": torch.get_num_threads(),
            "cpus": sorted(os.sched_getaffinity(0)),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "minibatches_per_epoch": n_mb,
            "num_train": train.n,
            "train_steps": train.num_steps,
            "z_dim": args.z_dim,
            "emission_dim": args.emission_dim,
            "transition_dim": args.transition_dim,
            "rnn_dim": args.rnn_dim,
            "learning_rate": args.learning_rate,
            "beta1": args.beta1,
            "beta2": args.beta2,
            "clip_norm": args.clip_norm,
            "lr_decay": args.lr_decay,
            "weight_decay": args.weight_decay,
            "annealing_epochs": args.annealing_epochs,
            "minimum_annealing_factor": args.minimum_annealing_factor,
            "seed": args.seed,
            "loss_units": "negative ELBO, nats per time step (sum over sequences / sum of lengths)",
        }
    )
    return out


if __name__ == "__main__":
    print(json.dumps(run(_ARGS)), flush=True)
