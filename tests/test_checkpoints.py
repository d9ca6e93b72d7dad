"""Kill and resume: every long run given ``checkpoint=`` and interrupted mid-way ends, when called again with the
same arguments, with exactly the result of an uninterrupted run; a checkpoint of another run is refused."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers.long_runs import RUNS, max_abs_diff

from pssm.checkpoint import read_checkpoint_metadata

pytestmark = pytest.mark.xdist_group("checkpoints")


class _Killed(Exception):
    pass


def _interrupt_after(monkeypatch, target, calls: int) -> list:
    """Make the run's per-chunk (or per-iteration) step raise on call number ``calls + 1``."""
    module, name = target
    real, seen = getattr(module, name), []

    def step(*a, **k):
        seen.append(1)
        if len(seen) > calls:
            raise _Killed
        return real(*a, **k)

    monkeypatch.setattr(module, name, step)
    return seen


@pytest.mark.parametrize("name", list(RUNS))
def test_interrupted_run_resumes_to_the_uninterrupted_result(name, tmp_path, monkeypatch):
    run, target, calls = RUNS[name]
    full = run(None)
    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as m:
        seen = _interrupt_after(m, target, calls)
        with pytest.raises(_Killed):
            run(path)
    assert len(seen) == calls + 1
    files = sorted(tmp_path.iterdir())
    assert files, f"{name}: no checkpoint written before the interruption"
    resumed = run(path)
    assert max_abs_diff(full, resumed) == 0.0
    # a finished run's checkpoint returns the result without running a step
    with monkeypatch.context() as m:
        seen = _interrupt_after(m, target, 0)
        again = run(path)
    assert seen == [] and max_abs_diff(full, again) == 0.0


def test_checkpoint_of_another_run_is_refused(tmp_path):
    run = RUNS["particle_gibbs"][0]
    path = tmp_path / "pg.ckpt"
    run(path)
    assert sum(read_checkpoint_metadata(path)["sizes"]) == 6
    from helpers import long_runs

    lg, p, y = long_runs._lgssm()
    with pytest.raises(ValueError, match="written by another run"):
        long_runs.particle_gibbs(
            jax.random.PRNGKey(99), lg, p, y, conditional=lambda k, path, ys, params: params, num_samples=6,
            num_particles=8, num_chains=2, chunk_size=2, checkpoint=path,
        )  # fmt: skip
    with pytest.raises(ValueError, match="written by another run"):
        long_runs.fit_em(jax.random.PRNGKey(0), *_em_args(), checkpoint=path)


def _em_args():
    from helpers import long_runs

    model, y = long_runs._hmm()
    return model, model.initialize(jax.random.PRNGKey(12), y), np.asarray(y)
