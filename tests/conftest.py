import os

import jax
import pytest

# The suite is compile-bound (small problems, many programs): XLA's optimisation passes cost more than they save
# here, so tests compile with most of them off (same semantics; about a quarter less time).  Subprocesses (case
# studies, notebooks, README blocks, the CLI) inherit it through the environment.  PSSM_TEST_OPTIMIZE=1 keeps XLA's
# defaults (e.g. to check a suspected optimisation-dependent result).
if os.environ.get("PSSM_TEST_OPTIMIZE") != "1":
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    jax.config.update("jax_disable_most_optimizations", True)


def _precision(enable_x64: bool):
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enable_x64)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", prev)


@pytest.fixture
def x64():
    """Run a test in float64 (restored afterwards)."""
    yield from _precision(True)


@pytest.fixture
def x32():
    """Run a test with JAX's default 32-bit types, even when the suite runs with JAX_ENABLE_X64=1."""
    yield from _precision(False)
