"""Results print short summaries; one sequence in gives one sequence out; EM offers the decoded path."""

import jax
import jax.numpy as jnp
import numpy as np

from pssm.display import describe
from pssm.inference import fit_em, marginal_log_likelihood, most_likely_states, smoother
from pssm.models import HMM, PoissonEmissions


def _fit():
    model = HMM(2, PoissonEmissions(3))
    y = jax.random.poisson(jax.random.PRNGKey(2), jnp.array([1.0, 4.0, 2.0]), (120, 3)).astype(jnp.float32)
    fit = fit_em(jax.random.PRNGKey(3), model, model.initialize(jax.random.PRNGKey(4), y), y, num_iters=4)
    return model, y, fit


def test_single_sequence_in_single_sequence_out_and_em_decodes():
    model, y, fit = _fit()
    batched = smoother(model, fit.params, y[None])
    single = smoother(model, fit.params, y)
    assert single.smoothed_probs.shape == (120, 2) and batched.smoothed_probs.shape == (1, 120, 2)
    np.testing.assert_array_equal(np.asarray(single.smoothed_probs), np.asarray(batched.smoothed_probs[0]))
    assert fit.posterior.smoothed_probs.shape == (120, 2) and fit.single
    path = np.asarray(fit.most_likely_states())
    np.testing.assert_array_equal(path, np.asarray(most_likely_states(model, fit.params, y)))
    np.testing.assert_array_equal(path, np.asarray(most_likely_states(model, fit.params, [y]))[0])
    assert np.ndim(marginal_log_likelihood(model, fit.params, y)) == 0
    two = fit_em(jax.random.PRNGKey(3), model, fit.params, [y, y[:50]], num_iters=2)
    assert not two.single and two.most_likely_states().shape == (2, 120)


def test_results_and_params_print_shapes_not_arrays():
    model, y, fit = _fit()
    text = repr(smoother(model, fit.params, y))
    f = "f64" if jax.config.jax_enable_x64 else "f32"  # the suite also runs with JAX_ENABLE_X64=1
    assert f"smoothed_probs={f}[120,2]" in text and "impossible_step=-1" in text and len(text) < 400, text
    assert repr(fit.params).startswith("HMMParams(initial=InitialParams(") and f"rates={f}[2,3]" in repr(fit.params)
    assert "model=HMM" in repr(fit) and len(repr(fit)) < 200
    assert describe(np.float64(2.5)) == "2.5" and describe(np.zeros((2, 3), np.int32)) == "i32[2,3]"
