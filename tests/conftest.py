import faulthandler
import os
import shutil
import tempfile
from pathlib import Path

# Most of this suite's time is XLA compiling many small programs, not running them.  LLVM at -O0 compiles about
# 30% faster (measured on tests/test_conformance.py), and the classic elemental emitters instead of the MLIR fusion
# emitters halve XLA's backend compile time again (8.8 s -> 3.8 s on a particle filter + Kalman + PaRIS + EM
# script); the programs compute the same thing.  Subprocess tests inherit the flags.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", "")]
    + [
        f"--{flag}={value}"
        for flag, value in (("xla_backend_optimization_level", 0), ("xla_cpu_use_fusion_emitters", "false"))
        if flag not in os.environ.get("XLA_FLAGS", "")
    ]
).strip()

# One persistent compilation cache per test run, shared by the xdist workers and every subprocess the tests start
# (README blocks, notebooks, case studies, CLI, multiprocess): the suite compiles the same programs again and again
# (fresh model objects, new processes), and a cache hit skips XLA.  It starts empty in every run (made by the
# controller, removed at the end), so no result depends on an earlier run.  PSSM_TEST_COMPILE_CACHE=0 turns it off.
if os.environ.get("PSSM_TEST_COMPILE_CACHE", "1") != "0" and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE = tempfile.mkdtemp(prefix="pssm-test-xla-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
else:
    _OWN_CACHE = None

import jax
import pytest

_CRASH_DIR = "PSSM_TEST_CRASH_DIR"
_RUNNER_PACKAGES = ("_pytest", "pluggy", "execnet", "xdist")


@pytest.hookimpl(trylast=True)  # after pytest's own faulthandler plugin, which points it at stderr
def pytest_configure(config):
    """Under xdist, each worker writes a fatal-error traceback (segfault, abort) to a file that the controller
    prints in its summary: in a long log the worker's own dump is cut off before its first frames."""
    if not hasattr(config, "workerinput"):
        os.environ[_CRASH_DIR] = config._pssm_crash_dir = tempfile.mkdtemp(prefix="pssm-test-crashes-")
    elif os.environ.get(_CRASH_DIR):
        name = f"{os.environ.get('PYTEST_XDIST_WORKER', 'worker')}-{os.getpid()}.txt"
        # a raw descriptor, open for the worker's life: faulthandler writes to it from the signal handler
        fd = os.open(Path(os.environ[_CRASH_DIR]) / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        faulthandler.enable(file=fd, all_threads=True)


def pytest_terminal_summary(terminalreporter, config):
    crash_dir = getattr(config, "_pssm_crash_dir", None)
    if crash_dir is None:
        return
    for path in sorted(Path(crash_dir).glob("*.txt")):
        text = path.read_text().split("\nExtension modules:")[0].strip()
        if text:  # the frames of pytest's own machinery say nothing about the crash
            lines = [ln for ln in text.splitlines() if not any(f"/{m}/" in ln for m in _RUNNER_PACKAGES)]
            terminalreporter.write_sep("=", f"fatal error in xdist worker {path.stem}")
            terminalreporter.write_line("\n".join(lines)[:8000])


def pytest_unconfigure(config):
    if getattr(config, "_pssm_crash_dir", None) is not None:
        shutil.rmtree(config._pssm_crash_dir, ignore_errors=True)
    if _OWN_CACHE is not None and not hasattr(config, "workerinput"):  # the process that made it removes it
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def _max_map_count() -> int:
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return 65530


def _num_mappings() -> int:
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux: no such limit to guard
        return 0


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Drop JAX's compiled programs after a test module once the process holds half its memory-mapping limit.

    Every live XLA:CPU executable keeps three to five memory mappings of JIT code and data; a worker that keeps
    every program of a full run alive passes Linux's ``vm.max_map_count`` (65530) and then segfaults inside the
    compiler.  Clearing after every module would recompile the small programs modules share, so clear rarely."""
    yield
    if _num_mappings() > _max_map_count() // 2:
        jax.clear_caches()


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
