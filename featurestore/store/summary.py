"""What one `extract` did: counts, failures and the measured seconds that go into timings.json."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..extractors.base import Extractor


@dataclass
class ExtractSummary:
    pairs: int = 0
    computed: Counter = field(default_factory=Counter)   # "<extractor>/<level>" -> rows computed now
    cached: Counter = field(default_factory=Counter)     # "<extractor>/<level>" -> rows already present
    failures: dict[str, str] = field(default_factory=dict)  # file (and extractor) -> one-line reason
    resized_pairs: int = 0  # pairs decoded in this run whose degraded image differs in size from the reference
    seconds: float = 0.0
    compute_seconds: Counter = field(default_factory=Counter)  # "<extractor>/<level>" -> seconds spent computing
    decode_seconds: float = 0.0
    decoded_images: int = 0
    pixels: dict[str, str] = field(default_factory=dict)  # pixel sha256 -> file sha256 of the images decoded

    def add_work(self, other: "ExtractSummary") -> None:
        """Add what `other` (the work of one worker) computed, decoded, measured and failed on."""
        self.computed.update(other.computed)
        self.compute_seconds.update(other.compute_seconds)
        self.failures.update(other.failures)
        self.resized_pairs += other.resized_pairs
        self.decode_seconds += other.decode_seconds
        self.decoded_images += other.decoded_images
        self.pixels.update(other.pixels)

    def timing_entries(self, extractors: list[Extractor]) -> list[tuple[str, float, int]]:
        """(timings.json name, seconds, items) of this run: decoding, and each extractor folder and level."""
        entries = [("decode/image", self.decode_seconds, self.decoded_images)]
        for ex in extractors:
            for level in ex.levels:
                k = f"{ex.name}/{level}"
                entries.append((f"{ex.folder}/{level}", self.compute_seconds[k], self.computed[k]))
        return entries

    def lines(self) -> list[str]:
        out = [f"{self.pairs} pairs in {self.seconds:.1f}s"]
        for key in sorted(set(self.computed) | set(self.cached)):
            out.append(f"  {key:<28} computed {self.computed[key]:>6}  cached {self.cached[key]:>6}")
        if self.resized_pairs:
            out.append(f"  {self.resized_pairs} pair(s) with a degraded image of another size than the reference: "
                       "resized to the reference for pair-level extractors")
        if self.failures:
            out.append(f"  {len(self.failures)} failure(s):")
            out.extend(f"    {where}: {why}" for where, why in sorted(self.failures.items()))
        return out
