"""What one step of a compiled kernel costs, read from its sm_90 SASS (no GPU): the time loop's
instructions by class, the CTA barriers on the critical path, and global loads left behind the
grid barrier's wait. A proxy for a step's latency, never shown as a time.

The time loop is the kernel's widest loop (a backward branch); the grid barrier's polls are the
innermost loop inside it that loads with ``.STRONG.GPU`` (acquire polls compile to such loads).
"""

import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass

from triton import knobs

# SASS opcode (its first dot-separated word) -> the class counted per step
CLASSES = {
    "HMMA": "mma",
    "HGMMA": "mma",
    "LDG": "ldg",
    "STG": "stg",
    "LDS": "lds",
    "LDSM": "lds",
    "STS": "sts",
    "STSM": "sts",
    "BAR": "bar",
    "ATOM": "atom",
    "ATOMG": "atom",
    "RED": "atom",
    "REDG": "atom",
    "MUFU": "mufu",
    "FFMA": "ffma",
    "LDL": "spill",
    "STL": "spill",
}
STAT_CLASSES = ("mma", "ldg", "stg", "lds", "sts", "bar", "atom", "mufu", "ffma", "spill")

_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


@dataclass(frozen=True)
class Instr:
    addr: int
    opcode: str  # with its modifiers, e.g. LDG.E.128.STRONG.GPU
    operands: str

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]

    @property
    def strong_load(self) -> bool:
        """A global load through L2 at gpu scope: an exchange reload (.cg) or a barrier poll."""
        return self.base == "LDG" and ".STRONG." in self.opcode


def nvdisasm(cubin: bytes) -> str:
    """SASS text of a cubin, from the disassembler Triton itself uses (its wheel's, or
    ``TRITON_NVDISASM_PATH``)."""
    tool = knobs.nvidia.nvdisasm.path
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool, "-c", f.name], capture_output=True, text=True, check=True).stdout


def parse(sass: str) -> tuple[list[Instr], dict[str, int]]:
    """Instructions in address order, and each label's address."""
    instrs, labels, pending = [], {}, []
    for line in sass.splitlines():
        m = _LABEL.match(line.strip())
        if m:
            pending.append(m.group(1))
            continue
        m = _INSTR.search(line)
        if m:
            ins = Instr(int(m.group(1), 16), m.group(3), m.group(4).strip())
            for name in pending:
                labels[name] = ins.addr
            pending = []
            instrs.append(ins)
    return instrs, labels


def loops(instrs: list[Instr], labels: dict[str, int]) -> list[tuple[int, int]]:
    """(first, last) instruction indices of every loop: a branch back to an earlier label."""
    index = {ins.addr: i for i, ins in enumerate(instrs)}
    out = []
    for i, ins in enumerate(instrs):
        m = _TARGET.search(ins.operands) if ins.base == "BRA" else None
        if m and labels.get(m.group(1), ins.addr + 1) < ins.addr:
            out.append((index[labels[m.group(1)]], i))
    return out


@dataclass
class LoopStats:
    counts: dict  # per step, by class (the barrier's polls counted once), plus "total"
    critical_bar: int | None  # CTA barriers between the step's last MMA and its first global store
    loads_after_wait: int | None  # plain global loads after the grid barrier's wait, before the step's store


def loop_stats(sass: str) -> LoopStats | None:
    """The time loop's statistics, or None for a kernel without a loop."""
    instrs, labels = parse(sass)
    found = loops(instrs, labels)
    if not found:
        return None
    first, last = max(found, key=lambda fl: fl[1] - fl[0])
    body = instrs[first : last + 1]
    counts = Counter(CLASSES.get(ins.base, "other") for ins in body)
    stats = {c: counts[c] for c in STAT_CLASSES} | {"total": len(body)}

    stores = [i for i, ins in enumerate(body) if ins.base == "STG"]
    mmas = [i for i, ins in enumerate(body) if ins.base in ("HMMA", "HGMMA")]
    critical = None
    if mmas and stores:
        # the step's result is stored after its last MMA (cyclically: the store may wrap to the top)
        after = [s for s in stores if s > mmas[-1]] or stores
        span = body[mmas[-1] : after[0]] if after[0] > mmas[-1] else body[mmas[-1] :] + body[: after[0]]
        critical = sum(ins.base == "BAR" for ins in span)

    polls = [
        (f - first, la - first)
        for f, la in found
        if first < f and la < last and any(ins.strong_load for ins in instrs[f : la + 1])
    ]
    after_wait = None
    if polls and stores:
        wait_end = max(la for _, la in polls)
        nxt = [s for s in stores if s > wait_end]
        span = body[wait_end + 1 : nxt[0]] if nxt else body[wait_end + 1 :] + body[: stores[0]]
        after_wait = sum(ins.base == "LDG" and not ins.strong_load for ins in span)
    return LoopStats(stats, critical, after_wait)
