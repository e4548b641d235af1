"""The static step compiled ahead of time by a builder process (stream.engine.aot).

Real builds: a child process exports the demo step and compiles it with AOTInductor into the
test session's cache; the live side loads the package. Checked: the package equals the eager
step (carry on, irregular frames) and keeps equalling it after the tables grow (rows are a
dynamic dimension: no rebuild); while it builds the eager step serves; a second engine loads
it from the cache without a builder; keys are stable across processes and change with the
weights, the carry settings and the variant; a damaged package, a failing builder and a stale
lock are handled.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.checkpoint import load_checkpoint
from stream.engine.aot import Builds, Spec, Variant, cache_dir
from stream.engine.batch import BatchedEngine
from stream.engine.compiled import CompileError, compile_unavailable
from stream.engine.engine import CarryConfig
from tests.conftest import REPO
from tests.stream.test_static_step import irregular

CARRY = CarryConfig(enabled=True, refresh_every=4)


@pytest.fixture(scope="module")
def demo() -> tuple[torch.nn.Module, int]:
    model, _cfg, extra = load_checkpoint(DEMO_CHECKPOINT)
    return model, int(extra["data"]["image_size"])


def needs_compiler() -> None:
    why = compile_unavailable(torch.device("cpu"))
    if why is not None:
        pytest.skip(why)


@pytest.mark.slow
def test_package_equals_eager_serves_eager_while_building_and_survives_growth(demo) -> None:
    needs_compiler()
    model, size = demo
    compiled = BatchedEngine(model, size, carry=CARRY, compile="on")
    eager = BatchedEngine(model, size, carry=CARRY)
    steps = compiled.steps_fn
    assert steps.builds is not None                    # the CPU in fp32 builds ahead of time
    # -- while the builder runs, the eager step serves -------------------------------------
    steps.warm_in_background([(1, True)])
    assert steps.builds.pending(Variant(1, True))
    assert steps(1, True) is steps.steps[(True, False)]
    steps.builds.wait([Variant(1, True)])
    assert steps.builds.failed == {}
    fn = steps(1, True)
    assert fn is steps._compiled[(1, True)] and steps.compiled_variants == 1
    # -- equal to eager over irregular frames, carry on ------------------------------------
    sc, se = compiled.new_stream(), eager.new_stream()
    worst = 0.0
    for p in irregular(6, 10, 25):
        a, b = compiled.step([(sc, p)])[0], eager.step([(se, p)])[0]
        worst = max(worst, float((a.logits - b.logits).abs().max()))
        assert a.window == b.window and abs(a.keep_ratio - b.keep_ratio) < 0.02
    assert worst < 1e-3, worst
    # -- a second stream grows the tables: the same package serves both --------------------
    rows = compiled.tables.ring_audio.shape[0]
    sc2, se2 = compiled.new_stream(), eager.new_stream()
    assert compiled.tables.ring_audio.shape[0] > rows
    assert steps(1, True) is fn                        # no rebuild, nothing recompiled
    for p, q in zip(irregular(7, 10, 12, start_s=10.0), irregular(8, 10, 12, start_s=10.0),
                    strict=True):
        got = compiled.step([(sc, p)]) + compiled.step([(sc2, q)])
        ref = eager.step([(se, p)]) + eager.step([(se2, q)])
        for a, b in zip(got, ref, strict=True):
            assert float((a.logits - b.logits).abs().max()) < 1e-3
            assert a.window == b.window
    assert len(list(cache_dir().glob("*.pt2"))) >= 1
    # -- another engine for the same model finds the package: no builder -------------------
    again = BatchedEngine(model, size, carry=CARRY, compile="on")
    again.steps_fn.warm([(1, True)])
    assert again.steps_fn.compiled_variants == 1 and again.steps_fn.builds.proc is None


def test_keys_are_stable_across_processes_and_follow_what_is_compiled(demo) -> None:
    model, size = demo
    engine = BatchedEngine(model, size, carry=CARRY)
    spec = Spec(model, engine.tables, CARRY)
    v = Variant(1, True)
    assert spec.key(v) != spec.key(Variant(2, True)) != spec.key(Variant(1, False))
    assert Spec(model, engine.tables, CarryConfig()).key(v) != spec.key(v)
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    assert Spec(other, engine.tables, CARRY).key(v) != spec.key(v)
    assert Spec(copy.deepcopy(model), engine.tables, CARRY).key(v) == spec.key(v)
    code = ("from pcmanet.assets import DEMO_CHECKPOINT; from pcmanet.checkpoint import "
            "load_checkpoint; from stream.engine.batch import BatchedEngine; "
            "from stream.engine.aot import Spec, Variant; from stream.engine.engine import "
            "CarryConfig; m, _, x = load_checkpoint(DEMO_CHECKPOINT); c = CarryConfig("
            "enabled=True, refresh_every=4); e = BatchedEngine(m, int(x['data']['image_size']),"
            " carry=c); print(Spec(m, e.tables, c).key(Variant(1, True)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == spec.key(v)


def test_a_damaged_package_is_removed_and_auto_runs_eagerly(demo, tmp_path, monkeypatch,
                                                             caplog) -> None:
    needs_compiler()
    monkeypatch.setenv("PCMANET_LIVE_CACHE", str(tmp_path))
    model, size = demo
    engine = BatchedEngine(model, size, compile="auto")
    builds = engine.steps_fn.builds
    path = builds.package(Variant(1, True))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a package")
    assert engine.steps_fn(1, True) is engine.steps_fn.steps[(True, False)]
    assert not path.exists()
    assert "failed" in engine.steps_fn.why_eager and str(path) in engine.steps_fn.why_eager
    path.write_bytes(b"not a package")
    strict = BatchedEngine(model, size, compile="on")
    with pytest.raises(CompileError, match="rebuilt on the next start"):
        strict.steps_fn.warm([(1, True)])


def test_a_failing_builder_names_its_error_and_log(demo, tmp_path) -> None:
    model, size = demo
    engine = BatchedEngine(model, size)
    spec = Spec(model, engine.tables, CarryConfig())
    spec.write = lambda path: path.write_bytes(b"this is not a pickled model")  # type: ignore[method-assign]
    builds = Builds(spec, tmp_path)
    v = Variant(1, True)
    builds.wait([v])
    assert builds.ready(v) is None
    why = builds.failed[v]
    assert "exited with 1" in why and str(tmp_path) in why
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob("*.spec.*"))


def test_a_stale_lock_is_removed(demo, tmp_path) -> None:
    model, size = demo
    engine = BatchedEngine(model, size)
    builds = Builds(Spec(model, engine.tables, CarryConfig()), tmp_path)
    v = Variant(1, True)
    dead = subprocess.Popen(["true"])
    dead.wait()                                        # its pid names no live process now
    lock = tmp_path / f"{builds.spec.key(v)}.lock"
    lock.write_text(str(dead.pid))
    assert not builds._locked(v) and not lock.exists()
    lock.write_text(str(os.getpid()))                  # a live builder's lock stays
    assert builds._locked(v) and lock.exists()


def test_a_cache_others_can_write_to_is_not_used(demo, tmp_path, monkeypatch) -> None:
    """Packages are code this process loads: a folder writable by others compiles nothing."""
    needs_compiler()
    shared = tmp_path / "shared"
    (shared / "aot").mkdir(parents=True)
    (shared / "aot").chmod(0o777)
    monkeypatch.setenv("PCMANET_LIVE_CACHE", str(shared))
    model, size = demo
    engine = BatchedEngine(model, size, compile="auto")
    assert engine.steps_fn.builds is None and not engine.steps_fn.compiling
    assert "chmod 700" in engine.steps_fn.why_eager
    with pytest.raises(CompileError, match="not private to this user"):
        BatchedEngine(model, size, compile="on")
    (shared / "aot").chmod(0o700)
    assert BatchedEngine(model, size, compile="auto").steps_fn.builds is not None


@pytest.mark.parametrize(("args", "message"), [
    ([], "usage: python -m stream.engine.aot"),
    (["nope.spec", "1:1", "x.pt2"], "build input nope.spec not found"),
    (["README.md", "x:1", "y.pt2"], "variant 'x:1': expected P:EMBED"),
])
def test_the_builder_refuses_bad_arguments_with_one_error_line(args, message) -> None:
    out = subprocess.run([sys.executable, "-m", "stream.engine.aot", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in out.stderr
