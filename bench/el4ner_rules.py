"""How EL4NER combines its members, measured without re-running them (the ensemble against its members).

`record` runs the `el4ner` component's stages on Few-NERD episodes (SmolLM2-135M-Instruct and Gemma-3-270M as
members, as in `bench.retrieval_episodes`) and keeps everything the members said: each member's extracted spans, each
member's log-probability of every type for every span of the union, and each member's "Yes"/"No" log-probabilities
for every span under every type some combination rule could give it. `rules` then scores combination rules on
those records (Few-NERD protocol, the same scorer as `evaluate`): which spans to keep from extraction, how the
members' type scores are combined, when validation drops a span.

    python -m bench.el4ner_rules record --episodes dev_5_5.jsonl --start 0 --limit 6 --output bench/results/el4ner_rules
    python -m bench.el4ner_rules rules --episodes dev_5_5.jsonl --output bench/results/el4ner_rules
"""

from __future__ import annotations

import json
import math
import time
from itertools import islice, product
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import MEMBERS, add_episode_arguments, base_parser, el4ner_pipeline, set_threads

if TYPE_CHECKING:  # spaCy and the library are imported where they are used: --help stays fast
    from spacy.language import Language
    from spacy.tokens import Doc
    from spacy.training import Example


def build(k: int, max_new_tokens: int) -> Language:
    return el4ner_pipeline(list(MEMBERS), {}, k, max_new_tokens)


def softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


def record_docs(component, docs: list[Doc]) -> list[dict]:
    """The stages of `EL4NER._process` (all on), keeping what every member said about every span."""
    component.random.pool = component.retriever.pool
    chunks = component.chunks(docs)
    names = list(component.members)
    members = list(component.members.values())
    component.pre_extract(docs, chunks, members)
    demos = component.retriever.retrieve([c.span for c in chunks])
    per_member = {name: component.extract(chunks, demos, [m]) for name, m in zip(names, members, strict=True)}
    labels = list(component.labels)
    options = [f" {label}" for label in labels]
    records = []
    for i, (chunk, ids) in enumerate(zip(chunks, demos, strict=True)):
        spans: dict[tuple[int, int], dict] = {}
        for name in names:
            for c in per_member[name][i]:
                spans.setdefault((c.start, c.end), {"start": c.start, "end": c.end, "text": c.text, "by": []})
                spans[(c.start, c.end)]["by"].append(name)
        spans = dict(sorted(spans.items()))
        entry = {"doc": chunk.doc, "offset": chunk.span.start_char, "spans": list(spans.values())}
        records.append(entry)
        if not spans:
            continue
        prefix = component._classification_prefix(chunk, ids)
        questions = [(f"{s['text']}:", options) for s in spans.values()]
        for name, member in zip(names, members, strict=True):
            for s, scores in zip(spans.values(), member.score(prefix, questions), strict=True):
                s.setdefault("types", {})[name] = scores
        # validation under every type a rule may pick: each member's best, and the two best by mean probability
        prefix = component._validation_prefix(chunk, ids)
        asked = []
        for s in spans.values():
            best = {max(range(len(labels)), key=lambda j: s["types"][n][j]) for n in names}
            mean = [sum(p) / len(names) for p in zip(*(softmax(s["types"][n]) for n in names), strict=True)]
            best |= set(sorted(range(len(labels)), key=lambda j: -mean[j])[:2])
            asked += [(s, labels[j]) for j in sorted(best)]
        questions = [(f"{s['text']} is {label}?", (" Yes", " No")) for s, label in asked]
        for name, member in zip(names, members, strict=True):
            for (s, label), scores in zip(asked, member.score(prefix, questions), strict=True):
                s.setdefault("yes_no", {}).setdefault(label, {})[name] = scores
    return records


def record(args) -> None:
    from spacy.tokens import Doc

    from spacy_fsner.data.episodes import read_episodes

    nlp = build(args.k, args.max_new_tokens)
    component = nlp.get_pipe("el4ner")
    episodes = islice(read_episodes(args.episodes, nlp.vocab), args.start, args.start + args.limit)
    args.output.mkdir(parents=True, exist_ok=True)
    for number, episode in enumerate(episodes, start=args.start):
        path = args.output / f"episode-{number:03d}.json"
        if path.exists():
            continue
        start = time.perf_counter()
        component.adapt(episode.support, labels=episode.types)
        docs = [
            Doc(nlp.vocab, words=[t.text for t in d], spaces=[bool(t.whitespace_) for t in d]) for d in episode.query
        ]
        chunks = record_docs(component, docs)
        seconds = time.perf_counter() - start
        path.write_text(json.dumps({"episode": number, "labels": list(episode.types), "chunks": chunks}) + "\n")
        print(f"episode {number}: {sum(len(c['spans']) for c in chunks)} spans, {seconds:.0f} s", flush=True)


# rules --------------------------------------------------------------------------------------------------------------
EXTRACTION = ("union", "both", "smollm2", "gemma")
TYPING = ("vote", "mean-prob", "smollm2", "gemma")


def typed(span: dict, labels: list[str], typing: str) -> tuple[str, float]:
    """The span's type and its score (what `doc.ents` conflicts are resolved by) under a typing rule."""
    names = list(span["types"])
    if typing in names:
        scores = span["types"][typing]
        best = max(range(len(labels)), key=lambda j: scores[j])
        return labels[best], 1.0
    if typing == "vote":  # the component's rule
        from spacy_fsner.ensemble.el4ner import vote

        label, votes, _ = vote(labels, [span["types"][name] for name in names])
        return label, votes
    mean = [sum(p) / len(names) for p in zip(*(softmax(span["types"][n]) for n in names), strict=True)]
    best = max(range(len(labels)), key=lambda j: mean[j])
    return labels[best], mean[best]


VALIDATION_RULES = {"any-no": ("votes", 0.5), "all-no": ("votes", 1.0), "mean-prob": ("probability", 0.5)}
"""Each validation rule as the component's (`rejection`, `reject_share`)."""
VALIDATION = ("none", *VALIDATION_RULES)


def kept(span: dict, label: str, validation: str) -> bool:
    if validation == "none":
        return True
    from spacy_fsner.ensemble.el4ner import pooled_rejection

    rejection, share = VALIDATION_RULES[validation]
    return pooled_rejection(list(span["yes_no"][label].values()), rejection) < share


def predict_episode(record: dict, gold: list[Doc], rule: tuple[str, str, str]) -> list[Example]:
    from spacy.tokens import Doc
    from spacy.training import Example

    from spacy_fsner.pipeline.resolve import resolve_entities

    extraction, typing, validation = rule
    labels = record["labels"]
    found: list[list] = [[] for _ in gold]
    for chunk in record["chunks"]:
        for span in chunk["spans"]:
            by = span["by"]
            if extraction == "both" and len(by) < len(span["types"]):
                continue
            if extraction in MEMBERS and extraction not in by:
                continue
            label, score = typed(span, labels, typing)
            if kept(span, label, validation):
                found[chunk["doc"]].append(
                    (chunk["offset"] + span["start"], chunk["offset"] + span["end"], label, score)
                )
    examples = []
    for doc, spans in zip(gold, found, strict=True):
        pred = Doc(doc.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])
        candidates = [(pred.char_span(s, e, label=label), score) for s, e, label, score in spans]
        pred.ents = resolve_entities([c for c in candidates if c[0] is not None], [], False)
        examples.append(Example(pred, doc))
    return examples


def rules(args) -> None:
    import spacy

    from spacy_fsner.data.episodes import read_episodes
    from spacy_fsner.evaluation.scores import score_all

    vocab = spacy.blank("en").vocab
    episodes = list(read_episodes(args.episodes, vocab))
    records = [json.loads(p.read_text()) for p in sorted(args.output.glob("episode-*.json"))]
    groups = {"all": records}
    if args.split is not None:
        groups = {
            f"< {args.split}": [r for r in records if r["episode"] < args.split],
            f">= {args.split}": [r for r in records if r["episode"] >= args.split],
            "all": records,
        }
    header = " | ".join(f"F1 {name} ({len(recs)} ep.)" for name, recs in groups.items())
    print(f"| extraction | typing | validation | {header} |")
    print("|---|---|---|" + "---:|" * len(groups))
    for rule in product(EXTRACTION, TYPING, VALIDATION):
        cells = []
        for recs in groups.values():
            per_episode = [predict_episode(r, episodes[r["episode"]].query, rule) for r in recs]
            cells.append(f"{100 * score_all(episodes=per_episode)['fewnerd_episodes'].f:.2f}")
        print(f"| {' | '.join(rule)} | {' | '.join(cells)} |", flush=True)


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("command", choices=("record", "rules"))
    add_episode_arguments(parser, limit=6)
    parser.add_argument("--split", type=int, default=None, help="rules: also score episodes below / from N apart")
    parser.add_argument("--output", type=Path, default=Path("bench/results/el4ner_rules"))
    args = parser.parse_args()
    set_threads(args.threads)
    record(args) if args.command == "record" else rules(args)


if __name__ == "__main__":
    main()
