"""Static checks of the PTX a recurrent kernel compiles to: what the GPU will run, read on a CPU.

Four properties the kernels rely on and no CPU test can see (races between warps and programs,
memory ordering, where the weights are read):

- ``weights-in-loop``: the recurrent weights (``p_w``) are read from global memory only before
  the time loop, never inside a loop;
- ``exchange-unsynced``: every path from a store of the exchange buffer (forward: ``p_y``,
  backward: ``p_dx``) to a load of it crosses a CTA barrier (``bar.sync`` of all threads): warps
  reload elements other warps stored, around the time loop too. Paths around a loop nested in
  the time loop that holds the stores (the batch loop) do not count: a reload there reads other
  batch tiles' rows of the previous step, stored before that step's barrier;
- ``exchange-cached``: loads of the exchange buffer bypass L1 (``.cg``, ``.cv``, ``.volatile``
  or a gpu-scope strong load), which other programs' stores never update;
- ``barrier-semantics`` (kernels that pass the grid barrier): the arrive on the counter
  (``p_cnt``) is a release and the polls are acquires, at gpu scope, with a CTA barrier between
  the exchange stores and the arrive and between the polls and the exchange loads (one thread
  arrives and polls for the whole program).

Which registers hold which parameter's addresses comes from a small dataflow analysis: a
register derives from a parameter if an instruction computes it from one that does, starting at
the ``ld.param`` of the parameter (Triton's PTX is near-SSA: phis become copies into one
register, so a flow-insensitive union to a fixed point is a safe over-approximation). Values
that go through shared or local memory carry every parameter stored there.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

WEIGHTS_IN_LOOP = "weights-in-loop"
EXCHANGE_UNSYNCED = "exchange-unsynced"
EXCHANGE_CACHED = "exchange-cached"
BARRIER_SEMANTICS = "barrier-semantics"

_REG = re.compile(r"%[a-z]+\d+")
_LABEL = re.compile(r"^([$\w]+):$")
_ENTRY = re.compile(r"\.entry\s+(\w+)\s*\(([^)]*)\)", re.S)
_REQNTID = re.compile(r"\.reqntid\s+(\d+)")
_BRACKET = re.compile(r"\[([^\]]*)\]")
_IMMEDIATE = re.compile(r"^(0[xX][0-9a-fA-F]+|-?\d+)$")

_NO_REG_DEST = ("st", "red", "bar", "barrier", "bra", "ret", "exit", "trap", "fence", "membar", "prefetch", "cp")
_LOCAL_SPACES = ("shared", "local")  # memory whose loads may return a register stored by this program
_L1_BYPASS = ("cg", "cv", "volatile")
_STRONG_SCOPES = ("gpu", "sys")


@dataclass(frozen=True)
class Instr:
    line: int  # 1-based line in the PTX text
    pred: str  # guard predicate ("@%p1", "@!%p1") or ""
    op: str  # "ld.global.cg.v4.b32"
    operands: tuple[str, ...]

    @cached_property
    def parts(self) -> list[str]:
        return self.op.split(".")

    def __str__(self) -> str:
        return f"line {self.line}: {self.pred + ' ' if self.pred else ''}{self.op} {', '.join(self.operands)}"

    @cached_property
    def dests(self) -> list[str]:
        if not self.operands or self.parts[0] in _NO_REG_DEST:
            return []
        return _REG.findall(self.operands[0])

    @cached_property
    def sources(self) -> list[str]:
        rest = self.operands[1:] if self.dests else self.operands
        return [r for o in rest for r in _REG.findall(o)]

    def addresses(self) -> list[str]:
        """The bracketed address operands, in order."""
        return [m.strip() for o in self.operands for m in _BRACKET.findall(o)]

    def space(self) -> str:
        """The state space of a memory instruction ("" for generic addressing)."""
        return next((p for p in self.parts if p in ("global", "shared", "local", "param", "const")), "")

    def reads_global(self) -> bool:
        head = self.parts[0]
        if head in ("ld", "ldu", "atom"):
            return self.space() in ("global", "")
        return self.op.startswith("cp.async.") and len(self.addresses()) == 2  # not its commits and waits

    def writes_global(self) -> bool:
        head = self.parts[0]
        return head in ("st", "red", "atom") and self.space() in ("global", "")

    def read_address(self) -> str:
        """The global address a read takes (cp.async: its source, the second bracket)."""
        return self.addresses()[-1]

    def is_cta_barrier(self, threads: int | None) -> bool:
        """An unpredicated barrier every thread of the program waits at (``bar.arrive`` does not
        wait; a barrier with a thread count below the program's lets the others through)."""
        parts = [p for p in self.parts if p != "cta"]
        if self.pred or parts[0] not in ("bar", "barrier") or len(parts) < 2 or parts[1] not in ("sync", "red"):
            return False
        count = self.operands[1] if parts[1] == "sync" and len(self.operands) > 1 else None
        return count is None or (threads is not None and _immediate(count) == threads)

    def semantics(self) -> tuple[str, str]:
        """(memory-order, scope) as PTX defaults them: atomics are relaxed at gpu scope, plain
        loads and stores weak."""
        parts = self.parts
        sem = next((p for p in parts if p in ("relaxed", "acquire", "release", "acq_rel", "volatile")), "")
        scope = next((p for p in parts if p in ("cta", "cluster", "gpu", "sys")), "")
        if parts[0] in ("atom", "red"):
            return sem or "relaxed", scope or "gpu"
        return sem or "weak", scope


@dataclass
class Kernel:
    """The entry function of a PTX module as a control-flow graph of basic blocks."""

    name: str
    params: list[str]  # parameter symbols, in order
    threads: int | None  # .reqntid: threads per program
    blocks: list[list[Instr]]
    succ: list[list[int]]

    def instrs(self):
        """(block index, instruction) pairs in program order."""
        for b, block in enumerate(self.blocks):
            for i in block:
                yield b, i

    def loop_blocks(self) -> set[int]:
        """Blocks on a cycle of the control-flow graph (inside some loop)."""
        return {b for comp in _sccs(self.succ) for b in comp if len(comp) > 1 or b in self.succ[b]}

    def inner_back_edges(self, blocks: set[int]) -> set[tuple[int, int]]:
        """Back edges of the loops nested one level inside an outermost loop that hold one of
        ``blocks`` themselves: edges into such a loop's header from inside it."""
        out = set()
        for outer in _loops(self.succ, set(range(len(self.blocks)))):
            head = _header(self.succ, outer)
            inside = [[s for s in self.succ[b] if s in outer and s != head] for b in range(len(self.blocks))]
            for inner in _loops(inside, outer):
                if inner & blocks:
                    h = _header(self.succ, inner)
                    out |= {(b, h) for b in inner if h in self.succ[b]}
        return out


def _immediate(text: str) -> int | None:
    text = text.strip()
    if not _IMMEDIATE.match(text):
        return None
    return int(text, 16) if text[:2] in ("0x", "0X") else int(text)


def _split_operands(text: str) -> tuple[str, ...]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return tuple(o for o in [*out, cur.strip()] if o)


def parse_kernel(ptx: str) -> Kernel:
    """The ``.entry`` function of ``ptx`` (Triton emits one per module)."""
    m = _ENTRY.search(ptx)
    if m is None:
        raise ValueError("no .entry function in the PTX")
    name = m.group(1)
    params = re.findall(r"(\w+_param_\d+)", m.group(2))
    threads = _REQNTID.search(ptx, m.end())
    start = ptx.index("{", m.end())
    lines = ptx[start:].split("\n")
    first_line = ptx[:start].count("\n") + 1
    targets = set(re.findall(r"\bbra(?:\.uni)?\s+([$\w]+)", ptx[start:]))  # other labels are for debug info
    blocks: list[list[Instr]] = [[]]
    labels: dict[str, int] = {}
    depth = 0
    for n, raw in enumerate(lines, first_line):
        text = raw.split("//", 1)[0].strip()
        label = _LABEL.match(text)
        if label and label.group(1) not in targets:
            continue
        if label:
            if blocks[-1]:
                blocks.append([])
            labels[label.group(1)] = len(blocks) - 1
            continue
        for piece in text.split(";"):
            piece = piece.strip()
            while piece.startswith("{"):
                depth, piece = depth + 1, piece[1:].strip()
            while piece.startswith("}"):
                depth, piece = depth - 1, piece[1:].strip()
            if not piece or piece.startswith("."):  # directives: .reg, .loc, ...
                continue
            pred = ""
            if piece.startswith("@"):
                pred, piece = piece.split(None, 1)
            op, _, rest = piece.partition(" ")
            instr = Instr(n, pred, op.strip(), _split_operands(rest))
            blocks[-1].append(instr)
            if instr.parts[0] in ("bra", "ret", "exit", "trap", "brx"):
                blocks.append([])
        if depth == 0:
            break
    if not blocks[-1]:
        blocks.pop()
    succ = []
    for b, block in enumerate(blocks):
        last = block[-1] if block else None
        head = last.parts[0] if last else ""
        nxt = [b + 1] if b + 1 < len(blocks) else []
        if head == "bra":
            succ.append([labels[last.operands[0]]] + (nxt if last.pred else []))
        elif head in ("ret", "exit", "trap"):
            succ.append(nxt if last.pred else [])
        elif head == "brx":
            raise ValueError(f"indirect branch not supported: {last}")
        else:
            succ.append(nxt)
    return Kernel(name, params, int(threads.group(1)) if threads else None, blocks, succ)


def _sccs(succ: list[list[int]]) -> list[list[int]]:
    """Strongly connected components (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], 0
    for root in range(len(succ)):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            if i < len(succ[v]):
                work.append((v, i + 1))
                w = succ[v][i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


def _loops(succ: list[list[int]], within: set[int]) -> list[set[int]]:
    """The loops (cyclic strongly connected components) of the graph ``succ`` restricted to
    ``within``."""
    sub = [[s for s in succ[b] if s in within] if b in within else [] for b in range(len(succ))]
    return [set(c) for c in _sccs(sub) if len(c) > 1 or c[0] in sub[c[0]]]


def _header(succ: list[list[int]], loop: set[int]) -> int:
    """A loop's entry block: the first one with a predecessor outside it (the first block when
    the loop holds the kernel's entry)."""
    entries = [b for b in loop if any(b in succ[p] for p in range(len(succ)) if p not in loop)]
    return min(entries or loop)


def param_origins(k: Kernel) -> dict[str, int]:
    """For each register, the bitmask of the parameters (by index) its value derives from."""
    sym = {p: i for i, p in enumerate(k.params)}
    origin: dict[str, int] = {}
    pooled = 0  # what was stored into shared/local memory
    changed = True
    while changed:
        changed = False
        for _, i in k.instrs():
            head = i.parts[0]
            if head == "ld" and i.space() == "param":
                bits = 1 << sym[i.addresses()[0]] if i.addresses()[0] in sym else 0
            elif head in ("ld", "ldu", "ldmatrix", "atom") or i.op.startswith("cp.async"):
                # a loaded value is data: only memory this program wrote pointers into carries them
                bits = pooled if i.space() in (*_LOCAL_SPACES, "") or head == "ldmatrix" else 0
            else:
                bits = 0
                for r in i.sources:
                    bits |= origin.get(r, 0)
                if head in ("st", "stmatrix") and i.space() in (*_LOCAL_SPACES, "") and bits & ~pooled:
                    pooled |= bits
                    changed = True
            for r in i.dests:
                if bits & ~origin.get(r, 0):
                    origin[r] = origin.get(r, 0) | bits
                    changed = True
    return origin


class _Analysis:
    """One kernel's PTX with its parameters named: ``names`` are the kernel's non-constexpr
    arguments in order (the first PTX parameters; Triton appends its scratch pointers)."""

    def __init__(self, ptx: str, names: Sequence[str]):
        self.k = parse_kernel(ptx)
        if len(self.k.params) < len(names):
            raise ValueError(f"{self.k.name} has {len(self.k.params)} PTX parameters, fewer than {len(names)}")
        self.bit = {name: 1 << i for i, name in enumerate(names)}
        self.origin = param_origins(self.k)
        self.loops = self.k.loop_blocks()

    def derives(self, address: str, name: str) -> bool:
        return any(self.origin.get(r, 0) & self.bit[name] for r in _REG.findall(address))

    def reads(self, name: str):
        return [(b, i) for b, i in self.k.instrs() if i.reads_global() and self.derives(i.read_address(), name)]

    def writes(self, name: str):
        return [(b, i) for b, i in self.k.instrs() if i.writes_global() and self.derives(i.addresses()[0], name)]

    def unsynced(
        self, sources: list[Instr], sinks: list[Instr], skip: set[tuple[int, int]] = frozenset()
    ) -> list[tuple[Instr, Instr]]:
        """(source, sink) pairs joined by a control-flow path with no CTA barrier on it and no
        edge of ``skip``."""
        src, snk = {id(i) for i in sources}, {id(i) for i in sinks}
        n = len(self.k.blocks)
        preds = [[] for _ in range(n)]
        for b, ss in enumerate(self.k.succ):
            for s in ss:
                preds[s].append(b)
        out_state: list[frozenset] = [frozenset()] * n
        found = {}
        work = list(range(n))
        while work:
            b = work.pop(0)
            state = frozenset().union(*(out_state[p] for p in preds[b] if (p, b) not in skip))
            for i in self.k.blocks[b]:
                if i.is_cta_barrier(self.k.threads):
                    state = frozenset()
                if id(i) in snk:
                    for s in state:
                        found.setdefault((s, id(i)), (s, i))
                if id(i) in src:
                    state = state | {i}
            if state != out_state[b]:
                out_state[b] = state
                work.extend(s for s in self.k.succ[b] if s not in work)
        return [(s, i) for s, i in found.values()]


def _pair(kind: str, source: Instr, sink: Instr) -> str:
    return f"{kind}: no bar.sync on a path from [{source}] to [{sink}]"


def check_weights(a: _Analysis, weights: str) -> list[str]:
    reads = a.reads(weights)
    if not reads:
        return [f"{WEIGHTS_IN_LOOP}: no load of {weights} found"]
    return [f"{WEIGHTS_IN_LOOP}: {weights} read inside a loop at [{i}]" for b, i in reads if b in a.loops]


def check_exchange(a: _Analysis, exchange: str) -> list[str]:
    """The exchange buffer's stores and reloads (``exchange-unsynced``) and its loads' cache
    path (``exchange-cached``)."""
    stores, loads = a.writes(exchange), a.reads(exchange)
    out = []
    if not any(b in a.loops for b, _ in stores) or not any(b in a.loops for b, _ in loads):
        out.append(f"{EXCHANGE_UNSYNCED}: no store and load of {exchange} inside a loop (nothing exchanged?)")
    batch_loop = a.k.inner_back_edges({b for b, _ in stores})
    for s, i in a.unsynced([i for _, i in stores], [i for _, i in loads], batch_loop):
        out.append(_pair(EXCHANGE_UNSYNCED, s, i))
    for _, i in loads:
        sem, scope = i.semantics()
        if not (any(p in _L1_BYPASS for p in i.parts) or (sem in ("relaxed", "acquire") and scope in _STRONG_SCOPES)):
            out.append(f"{EXCHANGE_CACHED}: {exchange} loaded through L1 at [{i}]")
    return out


def _add_operand(a: _Analysis, b: int, i: Instr) -> int | None:
    """The value an atomic add adds, when a constant: an immediate, or a register last set by
    a move of one earlier in the same block."""
    value = i.operands[-1]
    if _immediate(value) is not None:
        return _immediate(value)
    block = a.k.blocks[b]
    for j in reversed(block[: block.index(i)]):
        if value in j.dests:
            return _immediate(j.operands[1]) if j.parts[0] == "mov" and len(j.operands) == 2 else None
    return None


def check_barrier(a: _Analysis, counter: str, exchange: str) -> list[str]:
    """The grid barrier's arrive (an atomic add of a non-zero value to the counter: ``atom``, or
    ``red`` where its result is unused, as triton 3.9 emits it) and polls (loads of the counter,
    or atomic adds of zero)."""
    arrives, polls, out = [], [], []
    reductions = [(b, i) for b, i in a.writes(counter) if i.parts[0] == "red"]
    for b, i in a.reads(counter) + reductions:
        op = i.parts[0]
        if op in ("ld", "ldu"):
            polls.append((b, i))
        elif op in ("atom", "red") and ("add" in i.parts or "or" in i.parts):
            value = _add_operand(a, b, i)
            if value is None:
                arrives.append((b, i))
                if op == "atom":  # a red returns nothing: never a poll
                    polls.append((b, i))
            else:
                (polls if value == 0 else arrives).append((b, i))
    if not any(b in a.loops for b, _ in arrives) or not any(b in a.loops for b, _ in polls):
        out.append(f"{BARRIER_SEMANTICS}: no arrive and poll on {counter} inside a loop")
    for wanted, found in (("release", arrives), ("acquire", polls)):
        for _, i in found:
            sem, scope = i.semantics()
            if sem not in (wanted, "acq_rel") or scope not in _STRONG_SCOPES:
                out.append(f"{BARRIER_SEMANTICS}: {sem}.{scope or 'no-scope'} where {wanted}.gpu is due: [{i}]")
    stores, loads = [i for _, i in a.writes(exchange)], [i for _, i in a.reads(exchange)]
    out += [_pair(BARRIER_SEMANTICS, s, i) for s, i in a.unsynced(stores, [i for _, i in arrives])]
    out += [_pair(BARRIER_SEMANTICS, s, i) for s, i in a.unsynced([i for _, i in polls], loads)]
    return out


def check_ptx(ptx: str, names: Sequence[str], *, weights: str, exchange: str, counter: str | None) -> list[str]:
    """Every problem the checks find in one kernel's PTX, each prefixed with its check's name.
    ``names``: the kernel's non-constexpr arguments in order; ``counter``: the grid barrier's
    counter, None for a kernel that does not pass the grid barrier."""
    a = _Analysis(ptx, names)
    out = check_weights(a, weights) + check_exchange(a, exchange)
    if counter is not None:
        out += check_barrier(a, counter, exchange)
    return out
