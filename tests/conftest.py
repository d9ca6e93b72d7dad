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
