"""Runtime: ``infer(x, budget_ms)`` picks, per call, the branch that fits a live latency budget.

Per call: read the monitor's cached snapshot, let the scheduler choose (the latency model
predicts every branch under that contention), run the branch, record it. Learning from the
measured latency and the run statistics happen off the call path (``_learner.Learner``: in the
monitor's thread between calls, or in the learner's thread while the next call runs; the next
choice uses a model at most one call stale). A scheduler whose choice is a pure function of the
budget, the snapshot and the latency model (``Scheduler.pure_choice``) has its choice kept per
(budget, snapshot, model version) and prepared between calls, so a call with unchanged inputs
pays one comparison. A budget that cannot be met never raises: the fastest branch runs and the
record says the miss was predicted.
"""
from __future__ import annotations

import itertools
import logging
import math
import threading
import weakref
import time
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.runtime._learner import Learner
from edgeinf.runtime._stats import RunStats
from edgeinf.runtime.executors import Executor
from edgeinf.runtime.latency import LatencyModel, LatencyModelConfig
from edgeinf.runtime.monitor import IDLE, Monitor, Snapshot
from edgeinf.runtime.runners.base import TensorSpec
from edgeinf.runtime.schedulers import Scheduler, make_scheduler
from edgeinf.runtime.table import BranchTable

log = logging.getLogger("edgeinf")


class Record(NamedTuple):
    """One call: the branch that ran, predicted vs measured latency, the budget and the contention.

    ``decision_us``: the scheduler's choice plus any decisions its hook takes mid-pass (a gate's
    MLP, a threshold check); the exit heads a hook runs are inference, counted in ``measured_ms``.
    ``opened_sessions``: onnxruntime sessions this call had to open first (the first call of a
    branch since load, or since the pool closed its session): such a call's latency is mostly the
    opening (5-230 ms on the demo package), so the latency model does not learn from it
    (:meth:`Runtime.warm` opens them beforehand).
    Immutable; a named tuple, so the call path builds it with one allocation.
    """

    call: int
    branch: str
    budget_ms: float
    predicted_ms: float
    measured_ms: float
    met: bool
    predicted_miss: bool
    decision_us: float
    snapshot: Snapshot
    exited_at: int | None = None
    correct: bool | None = None
    opened_sessions: int = 0

    def to_dict(self) -> dict:
        d = self._asdict()
        d["snapshot"] = self.snapshot.to_dict()
        return d


_new_record = tuple.__new__  # _new_record(Record, values): a record without the keyword-parsing __new__


class Runtime:
    """Runs a package's branches under a per-call latency budget.

    Build it with :meth:`load` (a package directory) or directly from a branch table and an
    executor. ``infer`` is thread-safe (one call runs at a time, so measured latencies stay
    meaningful). Close it (or use ``with``) to stop the monitor and learner threads and release
    sessions. ``inline_learning=True`` updates the latency model and the statistics inside each
    call instead of in the learner thread (deterministic; costs tens of microseconds a call).

    Example:
        >>> with Runtime.load("out/package") as rt:                     # doctest: +SKIP
        ...     y, rec = rt.infer(x, budget_ms=5.0)
        ...     print(rec.branch, rec.measured_ms, rec.met)
    """

    def __init__(self, table: BranchTable, executor: Executor, scheduler: Scheduler | str | None = None,
                 latency: LatencyModel | LatencyModelConfig | None = None, monitor: Monitor | None = None,
                 input_spec: TensorSpec | None = None, clock: Callable[[], float] = time.perf_counter,
                 history: int = 10_000, allow_nonfinite: bool = False, inline_learning: bool = False):
        self.allow_nonfinite = bool(allow_nonfinite)  # False: NaN/inf inputs raise EdgeinfError
        self.executor = executor
        self._pool = getattr(executor, "pool", None)  # its sessions open on demand: a call may open some
        self._latency = latency if isinstance(latency, LatencyModel) else LatencyModel(latency)
        self._versions = itertools.count()  # next() is atomic: a fresh version from any thread
        self._version = next(self._versions)  # of what a choice depends on besides its inputs
        # the last choice: (budget_ms, snapshot, version, Decision, batch, factor, predicted ms of the
        # call = the decision's x factor, the decision predicts a miss)
        self._choice: tuple | None = None
        self._table = table
        self._by_path = {(b.blocks, b.exit): b for b in table}
        self.scheduler = make_scheduler(scheduler)
        self.monitor = monitor
        self.clock = clock
        self.stats_ = RunStats(history)
        self._calls = 0
        # shape and dtype of the last input that passed the spec check; an input with that dtype
        # *object* (numpy's built-in dtypes are singletons) and that shape passes by identity and
        # one tuple comparison: numpy's dtype comparison is cold C code after a real inference
        self._ok_shape: tuple | None = None
        self._ok_dtype: np.dtype | None = None
        self._ok_batch, self._ok_check = 1, True  # its batch, and whether it needs the NaN check
        self.session_threads = 1  # threads a call keeps busy (the monitor discounts them)
        self._learner = Learner(self._learn, inline=inline_learning).start()
        self._lock = threading.Lock()
        self._listener = None
        if not inline_learning and hasattr(monitor, "add_listener"):  # learn between calls, in its thread
            self._listener = _between_calls(weakref.ref(self))
            monitor.add_listener(self._listener)
            self._learner.hosted = True
        self._busy = None
        if hasattr(monitor, "add_busy_source"):  # our own threads are not contention: a call holds the lock
            self._busy = _busy_threads(weakref.ref(self))
            monitor.add_busy_source(self._busy)
        self.load_ms: float | None = None  # set by :meth:`load`
        self.executor.activate()
        self.input_spec = input_spec or executor.input_spec
        spec = self.input_spec
        self._dynamic_batch = spec is None or not spec.shape or spec.shape[0] is None
        if monitor is not None and not monitor.running:
            monitor.start()

    @classmethod
    def load(cls, pkg, backend: str | None = None, scheduler: Scheduler | str | None = None, board=None,
             monitor: Monitor | bool | None = True, latency: LatencyModel | LatencyModelConfig | None = None,
             **options) -> "Runtime":
        """A runtime for package ``pkg`` (a directory or a loaded ``edgeinf.package.Package``).

        Args:
            backend: a registered backend: "onnxruntime" (CPU, default), "onnxruntime-cuda",
                "onnxruntime-tensorrt", "tensorrt" (``edgeinf.runtime.register_backend`` adds more);
                ``None`` = the board's first available preference, else ORT CPU.
            scheduler: a registered scheduler: "lut" (default), "static", "threshold", a learned
                scheduler trained into the package ("gates", "gates-next", "content"), or a
                Scheduler instance.
            board: a board profile name or ``BoardProfile`` (GPU sysfs paths, backend preference).
            monitor: True = start a default monitor, False/None = no contention input, or a Monitor.
            latency: the latency model or its config (default: contention-aware).
            **options: ``allow_nonfinite=True`` lets NaN/inf inputs through (default: they raise),
                ``inline_learning=True`` learns on the call path (see the class docstring),
                ``remeasure=True`` times every branch here at load (a few frames each) when the
                package's latency table was measured at another intra-op thread count (default:
                a one-line warning and the table scaled by ``_package.thread_scale``),
                backend options (e.g. ``intra_op_threads=1``, ``trt_cache_dir=...``), and
                ``segments`` / ``max_segments`` / ``max_sessions`` (see ``edgeinf.runtime.build_executor``):
                ``segments=True`` composes mid-pass segments here (needs onnx), ``warm=True``
                opens every pickable branch's sessions before returning (:meth:`warm`).

        Sessions open on demand (the first call of a branch opens its graphs), unless ``warm``. What the package
        lacks for the fastest execution (a branch graph, segments) is logged as one warning line.
        ``load_ms`` is the time this call took.
        """
        from edgeinf.runtime import _package

        t0 = time.perf_counter()
        allow_nonfinite = bool(options.pop("allow_nonfinite", False))
        inline_learning = bool(options.pop("inline_learning", False))
        remeasure = bool(options.pop("remeasure", False))
        warm = bool(options.pop("warm", False))
        view = _package.open_package(pkg, backend, board, **options)
        if view.latency_note and remeasure:
            view.table = _package.remeasured_table(view)
        elif view.latency_note:
            log.warning(view.latency_note)
        if isinstance(scheduler, str):
            scheduler = _package.named_scheduler(view.package, scheduler)
        if monitor is True:
            monitor = _package.default_monitor(board)
        rt = cls(view.table, view.executor, scheduler, latency, monitor or None, view.input_spec,
                 allow_nonfinite=allow_nonfinite, inline_learning=inline_learning)
        rt.set_session_threads(options.get("intra_op_threads"))
        mid_pass = type(rt.scheduler).exit_hook is not Scheduler.exit_hook and bool(view.executor.exits)
        reachable = {b.id for b in rt.table.pareto()}  # what the table's schedulers can pick
        warning = _package.fallback_warning(view.package, view.executor, reachable, mid_pass)
        if warning:
            log.warning(warning)
        if warm:
            rt.warm()
        rt.load_ms = (time.perf_counter() - t0) * 1e3
        return rt

    def warm(self, branches: Iterable[str] | None = None) -> dict:
        """Open the sessions of ``branches`` (default: every branch the table can pick, its
        Pareto set) with one untimed call each on a sample input, so no later call pays a session's
        opening (5-230 ms per branch on the demo package, a missed budget). Costs the memory of
        those sessions; ``Runtime.load(pkg, warm=True)`` does it at load. Sessions a mid-pass
        hook needs (segments, gates) still open on their first use. Returns the branches run, the
        sessions opened and the ms it took."""
        from edgeinf.runtime.device_profile import sample_input

        t0 = time.perf_counter()
        rows = self._table.pareto() if branches is None else [self._table.get(b) for b in branches]
        spec = self.input_spec
        if spec is None or not spec.shape or any(not isinstance(d, int) for d in spec.shape[1:]):
            raise EdgeinfError("Runtime.warm needs the package's input shape; run one call of each branch instead")
        x = sample_input(spec)  # batch 1 where the batch dimension is free
        with self._lock:
            before = self._pool.opened if self._pool is not None else 0
            for b in rows:
                self.executor.run(b, x)
            opened = (self._pool.opened - before) if self._pool is not None else 0
        return {"branches": len(rows), "opened_sessions": opened, "ms": (time.perf_counter() - t0) * 1e3}

    @property
    def latency(self) -> LatencyModel:
        """The latency model, with every call so far applied (the caller may change it: the kept
        choice is dropped)."""
        self._learner.drain()
        self.invalidate_choices()
        return self._latency

    @property
    def table(self) -> BranchTable:
        return self._table

    @table.setter
    def table(self, table: BranchTable) -> None:
        """A new branch table (e.g. re-measured latencies): the scheduler is bound to it."""
        self._table = table
        self._by_path = {(b.blocks, b.exit): b for b in table}
        self._scheduler.bind(table, self._latency)
        self.invalidate_choices()

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    @scheduler.setter
    def scheduler(self, scheduler: Scheduler) -> None:
        """Another scheduler, bound to this runtime's table and latency model."""
        self._scheduler = scheduler.bind(self._table, self._latency)
        self._hooks = type(scheduler).exit_hook is not Scheduler.exit_hook
        self._pure = bool(getattr(scheduler, "pure_choice", False))
        self.invalidate_choices()

    def invalidate_choices(self) -> None:
        """Forget the kept choice: call it after changing what a choice depends on (the latency
        model, the table, the scheduler) other than through this runtime's own setters."""
        self._version = next(self._versions)
        self._choice = None

    def set_session_threads(self, threads: int | None) -> None:
        """Tell the latency model and the monitor how many threads a call runs on (``None`` = all cores)."""
        from edgeinf.contention import machine_cores

        self.session_threads = int(threads) if threads else machine_cores()
        self._learner.drain()
        self._latency.set_session(self.session_threads)
        self.invalidate_choices()

    # -- inference ---------------------------------------------------------------------
    def infer(self, x: np.ndarray, budget_ms: float, label: int | None = None) -> tuple[np.ndarray, Record]:
        """Run one input under ``budget_ms``; returns (logits, record).

        ``record.measured_ms`` runs from the start of this call's turn (after the input check
        and, with several threads, after waiting for the lock) to the output. The NaN/inf check
        of a floating-point input runs while the branch runs (in the monitor's or the learner's
        thread; small inputs on the call path); a call whose input fails it raises before
        anything is returned or learned.

        A batch of N samples is predicted as N batch-1 calls' worth of per-sample cost (learned
        online, see ``LatencyModel.batch_factor``); the budget is for the whole call.

        Raises:
            EdgeinfError: ``x`` does not match the package's input (shape or dtype), holds NaN or
                inf (unless the runtime was made with ``allow_nonfinite=True``), or the budget is
                not a finite positive real number. Never raised for a budget that cannot be met.
        """
        # one function on purpose: after a real inference the caches are cold and every call
        # and object touched here costs microseconds; the rare cases go to helpers
        if type(budget_ms) is not float or not 0.0 < budget_ms <= _MAX_BUDGET_MS:
            budget_ms = check_budget_ms(budget_ms)
        with self._lock:
            if x.__class__ is not np.ndarray or x.dtype is not self._ok_dtype or x.shape != self._ok_shape:
                self._admit(x)
            learner, batch, token = self._learner, self._ok_batch, None
            if self._ok_check and not self.allow_nonfinite:
                if learner.threaded and learner._error is None and x.nbytes > _INLINE_CHECK_BYTES:
                    # Learner.check_later, inlined: run while the branch runs, by whoever gets to it
                    token = learner.checks = learner.checks + 1
                    learner.to_check = (token, is_finite, x)
                else:
                    check_finite(x)  # a small input: cheaper here than a hand-off
            t0 = self.clock()
            if learner.submitted - learner.applied > 1:  # the choice uses a model at most one call stale
                learner.drain()
            mon = self.monitor
            snap = mon.snapshot if mon is not None else IDLE
            c = self._choice
            if c is None or c[1] is not snap or c[0] != budget_ms or c[2] != self._version or c[4] != batch:
                c = self._choose(budget_ms, snap, batch)  # else unchanged inputs and model: the kept choice
            decision, predicted_ms = c[3], c[6]
            decision_us = (self.clock() - t0) * 1e6
            hook = self._hook(decision) if self._hooks else None
            # lessons no host has applied yet (calls back to back): a backend run long enough to
            # hide them hands them to the learner thread; after a short one they are applied here,
            # after the run and outside its measured time (a woken thread would finish after it
            # and hold the GIL when the run returns)
            late = False
            if learner._pending:
                late = learner.threaded and predicted_ms < _HANDOFF_MIN_MS
                if not late:
                    learner.kick()
            elif token is not None and not learner.hosted:
                learner.kick()  # a check to run and no host (a host's tick runs it: waking a thread costs more)
            pool = self._pool
            opened = pool.opened if pool is not None else 0
            try:
                out = self.executor.run(decision.branch, x, hook)
            finally:
                measured_ms = (self.clock() - t0) * 1e3
            opened = pool.opened - opened if pool is not None else 0
            if token is not None:  # Learner.passed, inlined
                learner.to_check = None
                done = learner.checked
                if done is None or done[0] != token or not done[1]:
                    check_finite(x)  # not answered yet: checked here (raises the one-line error)
            ran, exited = decision.branch, None
            if hook is not None:
                decision_us += hook.decision_us  # the hook's own decisions (gates), not its exit heads
                exited = hook.exited_at  # (position, block) of an early exit
                ran = self._ran(ran, exited) if not getattr(hook, "rerouted", False) else self._switched(hook, ran)
            record = _new_record(Record, (
                self._calls, ran.id, budget_ms, predicted_ms, measured_ms, measured_ms <= budget_ms,
                c[7], decision_us, snap, exited[1] if exited else None,
                None if label is None else _correct(out, label), opened))
            self._calls += 1
            learner.submitted += 1  # Learner.submit, inlined: one append
            learner._pending.append((ran.base_ms, snap, measured_ms, batch, mon.snapshot if mon is not None else None, record))
            if late or not learner.threaded:
                learner.apply_pending()
            return out, record

    def _admit(self, x) -> None:
        """Check an input of a new shape or dtype against the package's input spec (then kept)."""
        if self.input_spec is not None:
            self.input_spec.check(x, "Runtime.infer")
        self._ok_shape, self._ok_dtype = (x.shape, x.dtype) if isinstance(x, np.ndarray) else (None, None)
        self._ok_batch = self._batch(x) if self._dynamic_batch else 1
        self._ok_check = x.dtype.kind in "fc"  # floating point: the NaN check applies

    def _hook(self, decision):
        """The scheduler's pass hook for ``decision`` (``None``: the executor has no exit heads)."""
        ex = self.executor
        return self._scheduler.exit_hook(decision, ex.run_exit, ex.exits, chain=ex.chain) if ex.exits else None

    def _batch(self, x: np.ndarray) -> int:
        """Samples in ``x``: its first dimension when that is the (dynamic) batch dimension."""
        spec = self.input_spec
        if x.ndim == 0 or (spec is not None and spec.shape and spec.shape[0] is not None):
            return 1
        return max(1, int(x.shape[0]))

    def _choose(self, budget_ms: float, snap: Snapshot, batch: int = 1) -> tuple:
        """The choice for these inputs as ``self._choice`` holds it (see ``__init__``), kept for the
        next call when it is a pure function of its inputs. The table and the model are in batch-1
        units: a batch of N is chosen under ``budget_ms / batch_factor(N)`` (learned, so part of
        the model's version)."""
        version = self._version  # read first: a model changed meanwhile gets a new version
        factor = self._latency.batch_factor(batch) if batch > 1 else 1.0
        decision = self._scheduler.choose(budget_ms / factor, snap)
        choice = (budget_ms, snap, version, decision, batch, factor, decision.predicted_ms * factor, not decision.fits)
        if self._pure:
            self._choice = choice
        return choice

    def _prepare_choice(self) -> None:
        """Between calls (the monitor's thread, after a new snapshot or lesson): the last budget's
        choice under the current snapshot and model, so the next call finds it kept."""
        c, mon = self._choice, self.monitor
        if c is not None and mon is not None and (c[1] is not mon.snapshot or c[2] != self._version):
            self._choose(c[0], mon.snapshot, c[4])

    def _learn(self, base_ms: float, snap: Snapshot, measured_ms: float, batch: int, after, record: Record) -> None:
        """What a call teaches, applied by the learner (off the call path). A call that opened a
        session teaches nothing: its time is the opening's, not the branch's."""
        if not record.opened_sessions:
            self._latency.observe(base_ms, snap, measured_ms, batch, after)
        self._version = next(self._versions)
        self.stats_.add(record)

    def _ran(self, planned, exited):
        """The branch that really ran (an early exit shortens the planned one)."""
        if not exited:
            return planned
        pos, block = exited
        return self._by_path.get((planned.blocks[: pos + 1], block), planned)

    def _switched(self, hook, planned):
        """The branch a pass that switched paths mid-pass ended on (the hook's current path)."""
        path = getattr(hook, "path", None)
        return self._table._by_id.get(path.id, planned) if path is not None else planned

    def stream(self, inputs: Iterable[np.ndarray], budget_ms: float | Callable[[int], float]) -> Iterator[tuple[np.ndarray, Record]]:
        """Run a stream (e.g. video frames); ``budget_ms`` may be a function of the frame index."""
        for i, x in enumerate(inputs):
            yield self.infer(x, budget_ms(i) if callable(budget_ms) else budget_ms)

    # -- results -------------------------------------------------------------------------
    def stats(self) -> dict:
        """Summary of every call so far: miss rate, miss bursts, p50/p95/p99, decision overhead, accuracy."""
        with self._lock:
            self._learner.drain()
            out = self.stats_.summary()
        out["latency_model"] = self._latency.state()
        out["scheduler"] = repr(self.scheduler)
        return out

    def reset_stats(self) -> None:
        """Forget the calls so far (e.g. after a warm-up); the latency model keeps what it learned."""
        with self._lock:
            self._learner.drain()
            self.stats_ = RunStats(self.stats_.recent.maxlen or 10_000)
            self._calls = 0

    def records(self) -> list[Record]:
        """The most recent records (bounded by ``history``)."""
        with self._lock:
            self._learner.drain()
            return list(self.stats_.recent)

    def close(self) -> None:
        """Stop the monitor thread and release the backend sessions (and their memory)."""
        self._learner.stop()
        if self.monitor is not None:
            if self._listener is not None:
                self.monitor.remove_listener(self._listener)
                self._learner.hosted = False
            if self._busy is not None:
                self.monitor.remove_busy_source(self._busy)
            self.monitor.stop()
        self.executor.deactivate()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _between_calls(ref: "weakref.ref[Runtime]") -> Callable[[], None]:
    """The monitor's listener of a runtime (held weakly: an unclosed runtime is still collected):
    apply the calls' lessons, then prepare the next choice. Never raises: a failure is kept by
    the learner and raised by the runtime's next drain."""

    def listener() -> None:
        rt = ref()
        if rt is None:
            return
        rt._learner.tick()
        try:
            if rt._pure:
                rt._prepare_choice()
        except Exception:  # the call path chooses again itself (and raises there)
            rt._choice = None

    return listener


def _busy_threads(ref: "weakref.ref[Runtime]") -> Callable[[], int]:
    """The monitor's busy source of a runtime (held weakly): its session threads while a call
    holds the runtime's lock (one call runs at a time), else 0."""

    def busy() -> int:
        rt = ref()
        return rt.session_threads if rt is not None and rt._lock.locked() else 0

    return busy


def _correct(logits: np.ndarray, label) -> bool:
    pred = np.asarray(logits).reshape(np.shape(logits)[0], -1).argmax(axis=1)
    return bool(np.all(pred == np.asarray(label).reshape(-1)))


_MAX_BUDGET_MS = 1e12


def check_budget_ms(budget_ms) -> float:
    """``budget_ms`` as a float, or a one-line EdgeinfError unless it is a finite positive real number
    (bool, str, None, complex, containers, NaN, inf and absurdly large integers are refused)."""
    if type(budget_ms) is float and 0.0 < budget_ms <= _MAX_BUDGET_MS:
        return budget_ms  # the common case, at no cost
    ok = isinstance(budget_ms, (int, float, np.integer, np.floating)) and not isinstance(budget_ms, (bool, np.bool_))
    if ok and isinstance(budget_ms, (int, np.integer)):
        ok = 0 < budget_ms <= _MAX_BUDGET_MS
    value = float(budget_ms) if ok else float("nan")
    if not (0.0 < value <= _MAX_BUDGET_MS):
        shown = _short_repr(budget_ms)
        raise EdgeinfError(f"budget_ms must be a finite positive number of milliseconds (at most {_MAX_BUDGET_MS:g}), "
                           f"got {shown} ({type(budget_ms).__name__})")
    return value


_ZEROS: dict[tuple[int, str], np.ndarray] = {}
_INLINE_CHECK_BYTES = 1 << 14  # smaller inputs are checked on the call path: a few us, less than waking a thread
# back-to-back calls whose branch is predicted to run shorter than this apply the previous calls'
# lessons themselves after the run: waking the learner thread costs more than it hides there
# (the 0.2 ms fastest branch of the demo package, one thread: measured 251 us with the hand-off, 215 us
# without, against a 213 us bare run; 260 vs 244 us as the caller sees it)
_HANDOFF_MIN_MS = 1.0


def is_finite(x: np.ndarray) -> bool:
    """Whether a floating-point ``x`` holds no NaN or inf (see :func:`check_finite`)."""
    try:
        check_finite(x)
    except EdgeinfError:
        return False
    return True


def check_finite(x: np.ndarray) -> None:
    """Raise EdgeinfError if a floating-point ``x`` holds NaN or inf.

    One pass: the dot product with zeros is 0 for finite values and NaN as soon as one value is
    NaN or inf (0 x inf = NaN in IEEE arithmetic), and unlike a sum it cannot overflow."""
    if x.dtype.kind not in "fc" or not x.size:
        return
    key = (x.size, x.dtype.str)
    zeros = _ZEROS.get(key)
    if zeros is None:
        if len(_ZEROS) > 16:
            _ZEROS.clear()
        zeros = _ZEROS[key] = np.zeros(x.size, x.dtype)
    with np.errstate(invalid="ignore"):  # 0 x inf: the NaN is the answer, not a warning
        dot = np.dot(x.reshape(-1), zeros)
    if not math.isfinite(float(dot) if x.dtype.kind == "f" else abs(complex(dot))):
        raise EdgeinfError("Runtime.infer: the input holds NaN or inf values; clean the input, or load the runtime "
                           "with allow_nonfinite=True to let them through")


def _short_repr(value) -> str:
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:40] + "..."
