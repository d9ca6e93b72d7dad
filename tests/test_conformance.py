"""Conformance of every model class to the protocol and of the algorithms to each other (dynamax style).

The registry of cases is :data:`conformance_checks.CASES` (one line per model configuration); the shared checks
live in ``tests/conformance_checks.py`` so ``benchmarks/model_layer.py`` runs the same ones.  Exact parts run in
float64 (``x64`` fixture).
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import conformance_checks as cc  # noqa: E402

BY_NAME = {c.name: c for c in cc.CASES}


def _by_case(names):
    """One xdist group per case: its checks share the simulated data and compiled programs on one worker
    (``make test`` runs ``--dist loadgroup``)."""
    return [pytest.param(n, marks=pytest.mark.xdist_group(f"conformance-{n}")) for n in names]


NAMES = _by_case(BY_NAME)
DISCRETE_EM = _by_case(c.name for c in cc.CASES if c.em)
CONTINUOUS = _by_case(c.name for c in cc.CASES if not c.em)


def test_every_exported_model_class_is_registered():
    missing = cc.unregistered_model_classes()
    assert not missing, (
        f"pssm.models exports SSM classes with no conformance case: {missing}; add one Case(...) line to "
        "tests/conformance_checks.py:CASES."
    )


def test_every_inference_result_has_an_arviz_converter():
    missing = cc.results_without_converter()
    assert not missing, f"result NamedTuples exported by pssm.inference without a to_arviz converter: {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_log_joint_is_the_sum_of_protocol_densities(x64, name):
    assert cc.check_log_joint(BY_NAME[name]) < 1e-8


@pytest.mark.parametrize("name", NAMES)
def test_particle_filter_matches_exact_log_likelihood(x64, name):
    r = cc.check_filter_vs_exact(BY_NAME[name])
    assert r["finite"]
    if "z" in r:  # an exact log-likelihood exists: forward algorithm or Kalman
        assert abs(r["z"]) < cc.Z_MAX, r
        assert r["bias_over_se"] < 1.0, r  # the -Var/2 bias of log(unbiased) is negligible against the test


@pytest.mark.parametrize("name", NAMES)
def test_numpyro_bridge_density_and_freezing(x64, name):
    r = cc.check_bridge(BY_NAME[name])
    assert r["rel_err"] < 1e-10, r
    if BY_NAME[name].frozen is not None:
        assert r["frozen_site_was_present"] and not r["frozen_site_present"], r
        assert r["frozen_rel_err"] < 1e-10, r


@pytest.mark.parametrize("name", DISCRETE_EM)
def test_em_objective_monotone_matches_loglik_prior_and_bridge(x64, name):
    case = BY_NAME[name]
    r = cc.check_em(case)
    assert r["improvement"] > 0, r
    assert r["max_rel_decrease"] <= cc.TOL, r
    assert r["objective_err"] < 1e-10, r
    assert r["bridge_vs_em_err"] < 1e-10, r
    assert r["frozen_bitwise_equal"] and r["others_moved"], r
    assert r["frozen_max_rel_decrease"] <= cc.TOL, r
    assert not cc.check_arviz(cc.case_results(case, r))


def test_pmmh_holds_a_none_prior_leaf_fixed(x64):
    r = cc.check_pmmh_frozen()
    assert not r["frozen_in_samples"] and r["frozen_max_change"] == 0.0 and r["others_moved"], r
    assert not cc.check_arviz([r["result"]])


@pytest.mark.parametrize("name", CONTINUOUS)
def test_to_arviz_on_every_result(x64, name):
    assert not cc.check_arviz(cc.case_results(BY_NAME[name], None))
