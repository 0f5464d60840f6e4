"""Planning a nested run to a time limit (`siqa oof --time-limit SECONDS`, `[tabular] time_limit`).

AutoGluon's habit: the user says how long, the stack decides what to run. The first pool fit of a
run (repeat 1, without outer fold 1) is timed member by member; with those costs the plan is
  seconds ~ sum of kept members' fit seconds x (pool fits still to run) / parallel jobs,
with a share of the limit held back for blending, calibration and reporting. While that exceeds the
limit, the plan first gives up repeats (each is a complete, equally honest CV; more of them only
average fold-assignment luck), then drops members, the most expensive first, never the member that
scored best on the timed fit's held-out fold. Between repeats the run checks the clock again and
stops early if a repeat took longer than planned. Everything dropped is listed in the run summary
and printed: a shorter run is never silently a different one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: part of the limit kept for blender and calibrator fitting, the refit's blend and the report
RESERVE = 0.15


@dataclass
class Plan:
    time_limit: float | None
    repeats: int
    members: list[str]
    dropped_members: list[str] = field(default_factory=list)
    dropped_repeats: int = 0
    estimated_seconds: float = 0.0

    def describe(self) -> str:
        if self.time_limit is None:
            return "no time limit"
        parts = [f"time limit {self.time_limit:.0f} s, planned ~{self.estimated_seconds:.0f} s"]
        if self.dropped_repeats:
            parts.append(f"dropped {self.dropped_repeats} repeat(s) (running {self.repeats})")
        if self.dropped_members:
            parts.append(f"dropped member(s) {', '.join(self.dropped_members)}")
        if len(parts) == 1:
            parts.append("nothing dropped")
        return "; ".join(parts)

    def as_dict(self) -> dict:
        return {"time_limit": self.time_limit, "repeats": self.repeats, "dropped_repeats": self.dropped_repeats,
                "dropped_members": self.dropped_members, "estimated_seconds": round(self.estimated_seconds, 1),
                "text": self.describe()}


def estimate(seconds: dict[str, float], members: list[str], fits_left: int, jobs: int) -> float:
    return sum(seconds[m] for m in members) * fits_left / max(1, min(jobs, fits_left))


def plan(seconds: dict[str, float], scores: dict[str, float], repeats: int, fits_per_repeat: int, jobs: int,
         time_limit: float | None, elapsed: float) -> Plan:
    """`seconds`/`scores`: each member's fit time and held-out Final on the timed first fit, which
    already ran (`elapsed` seconds so far); the refit on all rows counts as one more pool fit."""
    members = list(seconds)
    if time_limit is None:
        return Plan(None, repeats, members)
    budget = time_limit * (1 - RESERVE) - elapsed
    kept, chosen_repeats = list(members), repeats

    def cost(r: int, m: list[str]) -> float:
        return estimate(seconds, m, r * fits_per_repeat, jobs)  # r*F - 1 fits left, plus the refit

    while chosen_repeats > 1 and cost(chosen_repeats, kept) > budget:
        chosen_repeats -= 1
    protected = max(members, key=lambda m: scores.get(m, float("-inf")))
    for member in sorted(members, key=lambda m: -seconds[m]):
        if cost(chosen_repeats, kept) <= budget or len(kept) == 1:
            break
        if member != protected:
            kept.remove(member)
    return Plan(time_limit, chosen_repeats, kept, [m for m in members if m not in kept], repeats - chosen_repeats,
                elapsed + cost(chosen_repeats, kept))
