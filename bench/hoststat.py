"""How much CPU the host took away from this VM over a stretch of a benchmark ("steal", from /proc/stat).

On a shared host the hypervisor runs other guests on our cores; the time a runnable vCPU waits for that is
counted as steal. A benchmark that ran with 60% steal had well under half the machine, so its wall times say
more about the host than about the code: the benchmarks print the share beside their timings.

    before = cpu_times()
    ...                                  # the measured work
    print(f"cpu steal {steal_share(before, cpu_times()):.0%}")
"""

from __future__ import annotations

import os


def _stat_ticks() -> list[int] | None:
    """user nice system idle iowait irq softirq steal clock ticks of all CPUs since boot; None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]
    return ticks + [0] * (8 - len(ticks))


def cpu_times() -> tuple[int, int] | None:
    """(steal, total) clock ticks of all CPUs since boot; None where /proc/stat is missing (not Linux)."""
    ticks = _stat_ticks()
    return None if ticks is None else (ticks[7], sum(ticks))


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of CPU time stolen by the host between two `cpu_times()` readings; None if unknown."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def describe(share: float | None) -> str:
    return "unknown" if share is None else f"{share:.0%}"


def busy_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot (busy: neither idle nor iowait); None off Linux."""
    ticks = _stat_ticks()
    return None if ticks is None else (sum(ticks) - ticks[3] - ticks[4], sum(ticks))


def _used_ticks(stat_path: str) -> int | None:
    """User + system clock ticks from a /proc stat file (a process's or a thread's); None if it is gone."""
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def process_ticks(pid: int) -> int:
    """User + system clock ticks a live process has used (0 if it is gone or unknown)."""
    return _used_ticks(f"/proc/{pid}/stat") or 0


def thread_ticks(pid: int) -> dict[int, int]:
    """User + system clock ticks of each live thread of a process, by thread id (empty if it is gone)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    ticks = {int(tid): _used_ticks(f"/proc/{pid}/task/{tid}/stat") for tid in tids}
    return {tid: used for tid, used in ticks.items() if used is not None}  # a thread may end meanwhile


def others_share(before: tuple[int, int] | None, after: tuple[int, int] | None, own_ticks: int) -> float | None:
    """The share of the machine that processes other than the measured ones (`own_ticks`) kept busy between two
    `busy_ticks()` readings: what another user's job took from a benchmark that wants the machine to itself."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return max(0.0, (after[0] - before[0] - own_ticks) / (after[1] - before[1]))
