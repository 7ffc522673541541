"""Persistent launches under Triton's interpreter: one thread per program, seeded adversarial
schedules.

The interpreter runs a launch's programs one after another, so a persistent launch (the programs
of a group meet at the grid barrier every step) would wait forever, and no race between programs
could show. Inside ``concurrent_programs(seed)`` every interpreted launch runs each program on a
thread of its own instead. The threads take turns, one at a time (it holds the baton): before
each of its loads, stores and atomics a program may hand the baton on, with a probability drawn
per launch, to a program picked at random, some programs being picked far less often than the
others (a slow SM); a barrier poll always hands it on. The interleaving is a function of the seed
and of the launch's rank in the block alone, so a failing seed replays exactly.

A program whose poll found the barrier closed is blocked until another program loads, stores or
writes an atomic (its next poll would read the same memory). When every live program is blocked
the programs spin, so a kernel's own bounded wait can run out; after ``hang_polls`` such polls
in a row the launch ends in ``Deadlock``, and a join time-out bounds it in wall time as well:
the test process never hangs.

Patched from outside, only inside the ``with`` block (other tests of the process see the plain
interpreter): ``triton.runtime.interpreter.GridExecutor`` (its grid loop) and the masked load,
masked store and atomics of its ``interpreter_builder`` (the switch points). These internals
are the same in triton 3.6, 3.8 and 3.9; a version without them gets a clear error.
"""

import contextlib
import inspect
import itertools
import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import triton

try:
    from triton._C.libtriton import ir
    from triton.runtime import interpreter
    from triton.runtime.errors import InterpreterError
except ImportError:  # reported by concurrent_programs, naming the version
    ir = interpreter = InterpreterError = None

# The builder methods that touch global memory: each is a switch point.
_MEMORY_OPS = ("create_masked_load", "create_masked_store", "create_atomic_rmw", "create_atomic_cas")
# What the grid loop below takes from triton's own GridExecutor.__call__.
_INTERPRETER_PARTS = ("GridExecutor", "interpreter_builder", "_patch_lang", "_implicit_cvt")
_EXECUTOR_PARTS = ("_init_args_hst", "_restore_args_dev")


class Deadlock(RuntimeError):
    """The programs of a launch stopped making progress: each polls a barrier that cannot open."""


class NotInterleaved(AssertionError):
    """Launches under the schedule ran their programs one after another: nothing was tested."""


class UnsupportedTriton(RuntimeError):
    """The installed Triton's interpreter lacks the internals the schedule patches."""


class _Abandoned(BaseException):
    """Ends a program's thread when its launch is abandoned (an error elsewhere, a deadlock);
    a BaseException, so no ``except Exception`` of the interpreter stops it."""


@dataclass
class Launch:
    """What one launch did under the schedule."""

    kernel: str
    grid: tuple[int, int, int]
    p_switch: float  # chance of a hand-over before each load, store or atomic
    slow: tuple  # programs picked rarely
    switches: int = 0  # hand-overs from one running program to another
    loads: int = 0
    stores: int = 0
    atomics: int = 0  # atomics that write (the barrier's arrival, its poison)
    polls: int = 0  # atomics that only read (the barrier's poll)
    waits: int = 0  # polls after a poll that found the barrier closed
    idle_polls: int = 0  # polls while every live program was blocked (a time-out running down)

    @property
    def programs(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]


@dataclass
class Schedule:
    """The seed of every launch inside one ``concurrent_programs`` block, and what they did."""

    seed: int
    hang_polls: int
    join_timeout_s: float
    launches: list[Launch] = field(default_factory=list)

    def check_interleaved(self) -> None:
        """Raise NotInterleaved unless the schedule really ran the block's launches: at least
        one launch, each reaching the switch points (its loads and stores), and each that
        polled a barrier with several programs handing the baton over mid-way (a program ran
        while another was inside the kernel). A launch without a barrier may run its programs
        one after another: that is one of its schedules."""
        if not self.launches:
            raise NotInterleaved("no launch ran under the schedule: the interpreter's grid loop was not replaced")
        for launch in self.launches:
            if not (launch.loads and launch.stores):
                raise NotInterleaved(f"{launch.kernel} {launch.grid}: no load or store reached the schedule")
            if launch.polls and launch.programs > 1 and launch.switches == 0:
                raise NotInterleaved(f"{launch.kernel} {launch.grid}: its programs ran one after another")


class _Baton:
    """The turns of one launch's programs: exactly one runs; it hands the baton on only at a
    memory operation or when it finishes, so the interpreter's shared state (the builder's
    program id, its patched language) is never used by two threads at once, and an atomic is
    atomic."""

    def __init__(self, launch: Launch, ids: list, rng: random.Random, weight: dict, hang_polls: int):
        self.launch, self.rng, self.weight, self.hang_polls = launch, rng, weight, hang_polls
        self.live = list(ids)
        self.turn = {i: threading.Event() for i in ids}
        self.lock = threading.Lock()
        self.progress = 0  # loads, stores and writing atomics so far
        self.blocked = {}  # program -> progress its failed poll saw
        self.polled = set()  # programs whose last memory operation was a poll
        self.idle = 0  # polls in a row while every live program was blocked
        self.failure = None  # why the launch was abandoned

    def start(self) -> None:
        with self.lock:
            self.turn[self._pick(self.live)].set()

    def wait_turn(self, me) -> None:
        self.turn[me].wait()
        self.turn[me].clear()
        if self.failure is not None:
            raise _Abandoned
        interpreter.interpreter_builder.grid_idx = me  # tl.program_id of the running program

    def point(self, me, kind: str) -> None:
        """Before a memory operation of program ``me``: who runs next."""
        launch = self.launch
        with self.lock:
            if self.failure is not None:
                raise _Abandoned
            setattr(launch, kind + "s", getattr(launch, kind + "s") + 1)
            if kind == "poll":
                if me in self.polled:  # its last poll found the barrier closed
                    launch.waits += 1
                    self.blocked[me] = self.progress
                self.polled.add(me)
                others = [i for i in self._runnable() if i != me]
                nxt = self._pick(others) if others else (me if me not in self.blocked else self._spin())
                if nxt is None:
                    raise _Abandoned
            else:
                self.progress += 1
                self.idle = 0
                self.polled.discard(me)
                self.blocked.pop(me, None)
                nxt = self._pick(self._runnable()) if self.rng.random() < launch.p_switch else me
            if nxt == me:
                return
            launch.switches += 1
            self.turn[nxt].set()
        self.wait_turn(me)

    def finish(self, me) -> None:
        with self.lock:
            self.live.remove(me)
            self.blocked.pop(me, None)
            if self.live and self.failure is None:
                runnable = self._runnable()
                nxt = self._pick(runnable) if runnable else self._spin()
                if nxt is not None:
                    self.turn[nxt].set()

    def fail(self, why: str) -> None:
        """Abandon the launch: every program ends at its next turn."""
        if self.failure is None:
            self.failure = why
        for event in self.turn.values():
            event.set()

    def _runnable(self) -> list:
        return [i for i in self.live if self.blocked.get(i, -1) < self.progress]

    def _pick(self, candidates: list):
        return self.rng.choices(candidates, [self.weight[i] for i in candidates])[0]

    def _spin(self):
        """Every live program is blocked: the one to poll again (a bounded wait runs down), or
        None after ``hang_polls`` such polls in a row (the launch is abandoned)."""
        self.idle += 1
        self.launch.idle_polls += 1
        if self.idle <= self.hang_polls:
            return self.rng.choice(self.live)
        self.fail(
            f"deadlock in {self.launch.kernel} {self.launch.grid}: programs {self.live} polled "
            f"{self.hang_polls} times in a row with no load, store or write anywhere"
        )
        return None


_local = threading.local()  # on a program's thread: (its baton, its program id)


def _switch_point(kind_of):
    def wrap(original):
        def op(*args, **kwargs):
            running = getattr(_local, "program", None)
            if running is not None:
                baton, me = running
                baton.point(me, kind_of(*args))
            return original(*args, **kwargs)

        return op

    return wrap


def _rmw_kind(op, ptr, val, *rest) -> str:
    """Our barrier polls with an atomic add (or or) of 0: a read that writes nothing."""
    reads_only = op in (ir.ATOMIC_OP.ADD, ir.ATOMIC_OP.OR, ir.ATOMIC_OP.XOR) and not np.any(val.data)
    return "poll" if reads_only else "atomic"


_KINDS = {
    "create_masked_load": lambda *a: "load",
    "create_masked_store": lambda *a: "store",
    "create_atomic_rmw": _rmw_kind,
    "create_atomic_cas": lambda *a: "atomic",
}


def _executor_class(schedule: Schedule):
    """A GridExecutor whose grid loop runs every program on its own thread under ``schedule``."""

    class ConcurrentGridExecutor(interpreter.GridExecutor):
        def __call__(self, *args_dev, **kwargs):
            # triton's own __call__ (3.6, 3.8, 3.9) but for its grid loop
            argspec = inspect.getfullargspec(self.fn)
            kwargs = {k: v for k, v in kwargs.items() if k in argspec.args or k in argspec.kwonlyargs}
            args_hst, kwargs_hst = self._init_args_hst(args_dev, kwargs)
            for hook in self.pre_run_hooks:
                hook(*args_hst, **kwargs_hst)
            patch_scope = interpreter._patch_lang(self.fn)
            try:
                args = inspect.getcallargs(self.fn, *args_hst, **kwargs_hst)
                args = {k: v if k in self.constexprs else interpreter._implicit_cvt(v) for k, v in args.items()}
                grid = self.grid(args) if callable(self.grid) else self.grid
                grid = tuple(grid) + (1,) * (3 - len(grid))
                interpreter.interpreter_builder.set_grid_dim(*grid)
                _run_grid(schedule, self.fn, args, grid)
            finally:
                patch_scope.restore()
            self._restore_args_dev(args_dev, args_hst, kwargs, kwargs_hst)

    return ConcurrentGridExecutor


def _run_grid(schedule: Schedule, fn, args: dict, grid: tuple) -> None:
    ids = list(itertools.product(*map(range, grid)))
    rng = random.Random(f"{schedule.seed}-{len(schedule.launches)}")
    p_switch = rng.choice((0.02, 0.2, 0.7, 1.0))
    # some programs slow, never all: a lagging program is what exposes a race (even weights
    # run the programs almost in step, which hides most)
    slow = rng.sample(ids, rng.randint(1, len(ids) - 1)) if len(ids) > 1 else []
    weight = {i: rng.choice((0.01, 0.1)) if i in slow else 1.0 for i in ids}
    launch = Launch(fn.__name__, grid, p_switch, tuple(sorted(slow)))
    schedule.launches.append(launch)
    baton = _Baton(launch, ids, rng, weight, schedule.hang_polls)
    errors = []

    def program(me):
        _local.program = (baton, me)
        try:
            baton.wait_turn(me)
            fn(**args)
        except _Abandoned:
            pass
        except BaseException as e:  # noqa: B036 - raised again on the launching thread
            errors.append((me, e))
            baton.fail(f"program {me} raised")
        finally:
            _local.program = None
            baton.finish(me)

    threads = [threading.Thread(target=program, args=(i,), name=f"{fn.__name__}{i}", daemon=True) for i in ids]
    for t in threads:
        t.start()
    baton.start()
    deadline = time.monotonic() + schedule.join_timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        baton.fail(f"{fn.__name__} {grid} still running after {schedule.join_timeout_s} s")
        for t in threads:
            t.join(1.0)
    if errors:
        me, e = errors[0]
        raise InterpreterError(f"program {me}: {e!r}") from e
    if baton.failure is not None:
        raise Deadlock(baton.failure)


def _missing_internals() -> list[str]:
    if interpreter is None:
        return ["triton.runtime.interpreter"]
    missing = [name for name in _INTERPRETER_PARTS if not hasattr(interpreter, name)]
    if "GridExecutor" not in missing:
        executor = interpreter.GridExecutor
        missing += [f"GridExecutor.{name}" for name in _EXECUTOR_PARTS if not hasattr(executor, name)]
    if "interpreter_builder" not in missing:
        builder = interpreter.interpreter_builder
        missing += [f"interpreter_builder.{name}" for name in _MEMORY_OPS if not hasattr(builder, name)]
    if not all(hasattr(ir.ATOMIC_OP, op) for op in ("ADD", "OR", "XOR")):
        missing.append("ir.ATOMIC_OP")
    return missing


_active = threading.Lock()  # one block at a time: the patches are process-wide


@contextlib.contextmanager
def concurrent_programs(seed: int, *, hang_polls: int = 10_000, join_timeout_s: float = 120.0):
    """Inside, every interpreted launch runs one thread per program under the schedule of
    ``seed``; yields the ``Schedule``, whose ``launches`` say what each launch did. On a normal
    exit it checks the programs really interleaved (``Schedule.check_interleaved``)."""
    missing = _missing_internals()
    if missing:
        raise UnsupportedTriton(
            f"tests/interleaving.py patches the interpreter of triton 3.6, 3.8 and 3.9; triton {triton.__version__} "
            f"lacks {', '.join(missing)}"
        )
    if not _active.acquire(blocking=False):
        raise RuntimeError("concurrent_programs blocks do not nest")
    schedule = Schedule(seed, hang_polls, join_timeout_s)
    builder = interpreter.interpreter_builder
    saved_executor = interpreter.GridExecutor
    try:
        interpreter.GridExecutor = _executor_class(schedule)
        for name in _MEMORY_OPS:  # instance attributes over the class's methods, deleted after
            setattr(builder, name, _switch_point(_KINDS[name])(getattr(builder, name)))
        yield schedule
    finally:
        interpreter.GridExecutor = saved_executor
        for name in _MEMORY_OPS:
            builder.__dict__.pop(name, None)
        _active.release()
    schedule.check_interleaved()
