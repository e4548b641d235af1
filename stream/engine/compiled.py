"""The static step's variants, eager or compiled (``live.engine.compile: off | on | auto``).

A variant is one :class:`StaticStep` for a bucket size P and an audio mode (embed the rows'
audio, or reuse every row's last embedding). Compiled, the whole per-frame step is one graph:
no Python between operators, fused elementwise kernels, no graph breaks.

* ``off``: eager.
* ``on``: compiled; a failure raises :class:`CompileError`.
* ``auto`` (the default): compiled where a C++ compiler exists (inductor's CPU backend builds
  C++) and the compilation succeeds; otherwise eager, with one log line saying why.

Two ways to compile:

* **Ahead of time, in another process** (the CPU with fp32, :mod:`stream.engine.aot`): each
  variant is built by a child process at the lowest priority into an on-disk cache and loaded
  as a shared library once built; the eager step serves frames meanwhile, and the live process
  never holds the GIL for the compiler. A cached variant is compiled from the first frame.
* **In process** (CUDA, bf16): ``torch.compile(fullgraph=True, dynamic=False)`` (inductor), in
  a low-priority thread (:meth:`StepVariants.warm_in_background`) or before use
  (:meth:`StepVariants.warm`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from pcmanet.model import FrameFeatures, PCMANet
from stream.engine.aot import Builds, Spec, Variant, cache_dir, load_package, untrusted
from stream.engine.parts import CarryConfig
from stream.engine.ring import DeviceTables
from stream.engine.static import StaticStep

logger = logging.getLogger(__name__)
# torch's C++ builder warns on every compile that there is no CUDA runtime (true, irrelevant).
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

COMPILE_MODES = ("off", "on", "auto")
# Inductor on the CPU. Freezing folds the (fixed, inference-only) weights into the graph as
# constants, which lets it fold batch norms and pre-pack convolution and linear weights for
# oneDNN: ahead of time it pays (demo step 0.58 -> 0.56 of eager, reference R50 1.02 -> 0.81,
# docs/static_step.md). In process it is off (no gain measured there, and a background compile
# with it once crashed the process beside the eager step).
AOT_OPTIONS: dict[str, Any] = {"freezing": True}
CPU_OPTIONS: dict[str, str | int | bool | Callable[..., Any]] = {"freezing": False}
StepFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


_background: list[threading.Thread] = []   # compile threads started by warm_in_background


def exit_code(rc: int) -> int:
    """``rc``, for a command's ``sys.exit``; but while a background compilation is still
    running, exit the process now (``os._exit``, after flushing stdout and stderr): a daemon
    thread inside torch's C++ code when the interpreter finalises aborts the process
    ("terminate called without an active exception"). Call it once everything is closed."""
    if any(t.is_alive() for t in _background):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


class CompileError(RuntimeError):
    """``compile: on`` and the step could not be compiled; the message says why."""


def compile_unavailable(device: torch.device) -> str | None:
    """Why the step cannot be compiled on ``device`` here (None: it can be tried)."""
    if device.type == "cpu":
        names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
        if not any(shutil.which(name) for name in names):
            return "no C++ compiler (inductor builds C++ on the CPU: apt-get install g++)"
        return None
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed (inductor's GPU backend needs it)"
    return None


class StepVariants:
    """The static step per (bucket P, embed), built on first use.

    Args:
        model, tables, carry, encode: the :class:`StaticStep`'s.
        mode: "off", "on" or "auto" (see the module docstring).
        autocast: a context manager factory the step runs under (the engine's precision).
        aot: compile ahead of time in another process (:mod:`stream.engine.aot`; the CPU in
            fp32 with the model's own encoder), else ``torch.compile`` in this process.
    """

    def __init__(self, model: PCMANet, tables: DeviceTables, carry: CarryConfig,
                 encode: Callable[[Tensor, Tensor], FrameFeatures] | None, mode: str,
                 autocast: Callable[[], Any], aot: bool = False) -> None:
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {mode!r}")
        self.mode, self.autocast = mode, autocast
        # Eager steps gather QSCA's selected queries (the per-frame engine's values, bit for
        # bit); compiled ones take the static dense masked path.
        self.steps = {(embed, static): StaticStep(model, tables, carry, embed, encode, static)
                      for embed in (True, False) for static in (True, False)}
        self._compiled: dict[tuple[int, bool], StepFn] = {}
        self._lock = threading.Lock()        # one compilation at a time
        self.why_eager: str | None = None    # auto: why the step runs eagerly
        self.compiled_variants = 0
        self.tables = tables
        self._inputs = self._table_list()
        self.builds: Builds | None = None    # ahead-of-time packages (aot)
        if mode != "off":
            reason = compile_unavailable(next(model.parameters()).device)
            if reason is not None:
                self._give_up(reason)
            elif aot and (why := untrusted(cache_dir())) is not None:
                self._give_up(why)
            elif aot:
                try:
                    self.builds = Builds(Spec(model, tables, carry, AOT_OPTIONS))
                except Exception as e:  # e.g. a model that cannot be pickled for the builder
                    self._give_up(f"cannot hand the model to a builder process: "
                                  f"{type(e).__name__}: {e}")

    def _table_list(self) -> tuple[Tensor, ...]:
        return tuple(b for _, b in self.tables.named_buffers())

    @property
    def compiling(self) -> bool:
        return self.mode != "off" and self.why_eager is None

    def _give_up(self, reason: str) -> None:
        if self.mode == "on":
            raise CompileError(f"live.engine.compile is on but the step cannot be compiled: "
                               f"{reason}; set live.engine.compile to auto or off")
        self.why_eager = reason
        logger.warning("engine runs eagerly (live.engine.compile=auto): %s", reason)

    def __call__(self, P: int, embed: bool) -> StepFn:
        """The step for a batch of P rows: compiled if ready (or compiled now), else eager."""
        fn = self._compiled.get((P, embed))
        if fn is not None:
            return fn
        if self.compiling and self.builds is not None:
            fn = self._from_package(Variant(P, embed))
        elif self.compiling and not self._lock.locked():
            fn = self._compile(P, embed)
        return self.steps[(embed, False)] if fn is None else fn

    def _from_package(self, v: Variant) -> StepFn | None:
        """The variant's package loaded if built; else its build asked for (never waits)."""
        builds = self.builds
        assert builds is not None
        builds.poll()
        path = builds.ready(v)
        if path is None:
            if v in builds.failed:
                self._give_up(f"compiling the step failed: {builds.failed[v]}")
            else:
                builds.request([v])              # no-op while it is queued or building
            return None
        try:
            run = load_package(path)
        except Exception as e:  # a damaged package: remove it, so the next run rebuilds it
            path.unlink(missing_ok=True)
            self._give_up(f"loading the compiled step {path} failed ({type(e).__name__}: "
                          f"{e}); it was removed and is rebuilt on the next start")
            return None

        def fn(x: Tensor, mel: Tensor, control: Tensor) -> tuple[Tensor, Tensor]:
            logits, keep = run(x, mel, control, self._inputs)
            return logits, keep

        try:
            self._run_blank(fn, self.steps[(v.embed, True)], v.P)
        except Exception as e:
            self._give_up(f"the compiled step {path} failed its first run: "
                          f"{type(e).__name__}: {e}")
            return None
        self._compiled[(v.P, v.embed)] = fn
        self.compiled_variants += 1
        logger.info("engine step compiled for %d row(s)%s", v.P,
                    "" if v.embed else " (audio embedding reused)")
        return fn

    def _compile(self, P: int, embed: bool) -> StepFn | None:
        """Compile the (P, embed) variant (run once on blank inputs, so the graph is built
        now); None when ``auto`` gives up."""
        with self._lock:
            if (P, embed) in self._compiled:
                return self._compiled[(P, embed)]
            if not self.compiling:
                return None
            step = self.steps[(embed, True)]
            # Every variant is a graph of the same forward: room for all buckets x modes.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                                       64)
            cpu = step.tables.carry_image.device.type == "cpu"
            fn = torch.compile(step, fullgraph=True, dynamic=False,
                               options=CPU_OPTIONS if cpu else None)
            try:
                self._run_blank(fn, step, P)
            except Exception as e:
                torch._dynamo.reset()
                self._give_up(f"compiling the step failed: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}")
                return None
            self._compiled[(P, embed)] = fn
            self.compiled_variants += 1
            return fn

    def _run_blank(self, fn: StepFn, step: StaticStep, P: int) -> None:
        """One call on blank rows that write only the trash slot and trash stream row."""
        tb = step.tables
        S = tb.carry_image.shape[-1]
        dev = tb.carry_image.device
        # Inputs made as the engine makes them (inference tensors): a guard on the dispatch
        # keys would otherwise recompile at the first real step.
        with torch.inference_mode(), self.autocast():
            x = torch.zeros(P, 3, S, S, device=dev)
            mel = torch.zeros(P, 1, 96, 64, device=dev)
            control = torch.tensor(
                [[tb.trash_slot] * (step.T + 1) + [tb.trash_stream, 1, 0]] * P,
                dtype=torch.int64, device=dev)
            fn(x, mel, control)

    def warm(self, variants: Iterable[tuple[int, bool]]) -> None:
        """Compile these (P, embed) variants now (no-op when not compiling)."""
        if self.builds is not None and self.compiling:
            todo = [Variant(P, embed) for P, embed in variants]
            self.builds.wait(todo)
            for v in todo:
                if self.compiling and (v.P, v.embed) not in self._compiled:
                    self._from_package(v)
            return
        for P, embed in variants:
            if not self.compiling:
                return
            self._compile(P, embed)

    def warm_in_background(self, variants: Iterable[tuple[int, bool]]) -> None:
        """Compile these while frames keep flowing through the eager step: ahead of time, a
        builder process is asked for them (each switches over at its first use once built);
        in process, :meth:`warm` runs in a daemon thread at the lowest CPU priority (its
        compiler processes inherit it)."""
        todo = list(variants)
        if self.builds is not None:
            if self.compiling:
                self.builds.request([Variant(P, embed) for P, embed in todo])
            return

        def run() -> None:
            with contextlib.suppress(AttributeError, OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            self.warm(todo)

        thread = threading.Thread(target=run, name="compile-step", daemon=True)
        _background.append(thread)
        thread.start()

    def tables_changed(self) -> None:
        """The tables grew: packages take them as they are now (their rows are dynamic);
        in-process compiled variants recompile on their next use."""
        self._inputs = self._table_list()
        if self.builds is None:
            with self._lock:
                self._compiled.clear()
