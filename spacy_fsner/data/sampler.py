"""Few-NERD's greedy N-way K~2K-shot episode sampler (Ding et al. 2021, `util/fewshotsampler.py`), seeded.

What it does, as Few-NERD's sampler does:
- draw N types at random; the candidates are the sentences with at least one entity and no entity of another
  type (a sentence that mentions any other type is never used);
- support set: take candidates in random order; accept one only if, with it, no type has more than 2K mentions
  and it mentions some type that still has fewer than K; stop as soon as every type has at least K;
- query set: the same rule, with its own K (`query_shots`, default K as in the official episodes, whose
  5-way 1~2-shot query sets hold 3-5 sentences), over the candidates not in the support set.

Where it differs, and why:
- Few-NERD draws candidates with replacement and skips repeats. A rejected sentence never becomes
  acceptable later (counts only grow), so the order in which distinct sentences are first drawn is a
  uniform random permutation: walking a shuffled candidate list gives episodes with the same distribution,
  and it knows when the candidates run out. There Few-NERD loops forever; this sampler draws new types, and
  after `max_attempts` failed draws in a row raises an error that says which setting to lower.
- Types are sorted by name before drawing and the generator is `random.Random(seed)`, so the same seed and
  data give the same episodes in every process (Few-NERD draws from a set, whose order varies with the hash
  seed). It does not reproduce Few-NERD's own random stream.
"""

import random
from collections import Counter
from collections.abc import Iterator, Sequence

from spacy.tokens import Doc

from .episodes import Episode


class EpisodeSampler:
    """Draws N-way K~2K-shot episodes from labelled sentences; `sample()` gives the next episode."""

    def __init__(
        self,
        docs: Sequence[Doc],
        ways: int,
        shots: int,
        query_shots: int | None = None,
        seed: int = 0,
        max_attempts: int = 1000,
    ) -> None:
        query_shots = shots if query_shots is None else query_shots
        for name, value in (("ways", ways), ("shots", shots), ("query_shots", query_shots)):
            if value < 1:
                raise ValueError(f"{name}={value}: it must be at least 1")
        if max_attempts < 1:
            raise ValueError(f"max_attempts={max_attempts}: it must be at least 1")
        self.docs = list(docs)
        self.ways, self.shots, self.query_shots, self.max_attempts = ways, shots, query_shots, max_attempts
        self._counts = [Counter(ent.label_ for ent in doc.ents) for doc in self.docs]
        self._doc_types = [frozenset(counts) for counts in self._counts]
        self.types = sorted(set().union(*self._doc_types))
        if ways > len(self.types):
            raise ValueError(
                f"cannot sample {ways}-way episodes: the sentences have only {len(self.types)} entity types "
                f"({', '.join(self.types) or 'none'}); lower the number of ways"
            )
        self._rng = random.Random(seed)

    def sample(self) -> Episode:
        """The next episode: its types in drawing order, support and query sentences in the order accepted."""
        for _ in range(self.max_attempts):
            types = self._rng.sample(self.types, self.ways)
            wanted = frozenset(types)
            candidates = [i for i, present in enumerate(self._doc_types) if present and present <= wanted]
            support = self._fill(candidates, types, self.shots)
            if support is None:
                continue
            chosen = set(support)
            query = self._fill([i for i in candidates if i not in chosen], types, self.query_shots)
            if query is None:
                continue
            return Episode(support=[self.docs[i] for i in support], query=[self.docs[i] for i in query], types=types)
        raise ValueError(
            f"no {self.ways}-way {self.shots}~{2 * self.shots}-shot episode (query {self.query_shots}~"
            f"{2 * self.query_shots}) found in {self.max_attempts} draws of types: too few sentences mention "
            "only the drawn types; lower the number of ways or shots"
        )

    def _fill(self, candidates: list[int], types: list[str], k: int) -> list[int] | None:
        """Greedy K~2K selection over `candidates` in random order (shuffled lazily: most sets need few)."""
        pool = list(candidates)
        totals = dict.fromkeys(types, 0)
        chosen: list[int] = []
        for position in range(len(pool)):
            swap = self._rng.randrange(position, len(pool))
            pool[position], pool[swap] = pool[swap], pool[position]
            counts = self._counts[pool[position]]
            if any(totals[t] + n > 2 * k for t, n in counts.items()) or all(totals[t] >= k for t in counts):
                continue
            for t, n in counts.items():
                totals[t] += n
            chosen.append(pool[position])
            if all(total >= k for total in totals.values()):
                return chosen
        return None


def sample_episodes(
    docs: Sequence[Doc], ways: int, shots: int, n: int, seed: int = 0, query_shots: int | None = None
) -> Iterator[Episode]:
    """`n` episodes from `docs` (see `EpisodeSampler`); arguments are checked before the first is drawn."""
    if n < 0:
        raise ValueError(f"n={n}: the number of episodes cannot be negative")
    sampler = EpisodeSampler(docs, ways, shots, query_shots=query_shots, seed=seed)
    return (sampler.sample() for _ in range(n))
