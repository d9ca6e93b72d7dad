import os

# Most of this suite's time is XLA compiling many small programs, not running them: LLVM at -O0 compiles about
# 30% faster (measured on tests/test_conformance.py) and the programs stay the same.  Subprocess tests inherit it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax
import pytest


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
