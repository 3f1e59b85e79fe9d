"""Retrieval quality: does a retriever find demonstrations with the query's entity types?

Pool: `--pool` annotated sentences of Few-NERD INTER dev; queries: the next `--queries` dev sentences with at least
one entity (a sentence without one has no type to find), after a seeded shuffle. For each retriever: the share of a
query's gold entity types present in its top-1 and top-5 retrieved sentences (averaged over queries), and the
retrieval time per query (index building reported apart). The span retriever is given the query's gold entity
strings as its candidate spans: an upper bound of what EL4NER's pre-extraction would give it.

    python -m bench.retrieval_quality --model smollm2-135m-instruct --encoder all-minilm-l6-v2
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

from bench.common import SMOLLM2, base_parser, set_threads


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--model", default=SMOLLM2, help="input embeddings of this causal LM")
    parser.add_argument("--encoder", default="all-minilm-l6-v2", help="sentence encoder ('' to leave it out)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fewnerd/inter_sentences/val-inter-new.txt"))
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("bench/results/retrieval_quality.json"))
    args = parser.parse_args()
    import spacy  # here, not above: --help stays fast
    from spacy.tokens import Span

    from spacy_fsner.data.readers import read_docs
    from spacy_fsner.models.causal_lm import causal_lm_v1
    from spacy_fsner.retrieval.embeddings import EncoderEmbeddings, InputEmbeddings
    from spacy_fsner.retrieval.retrievers import RandomRetriever, SentenceRetriever, SpanRetriever, WordRetriever

    set_threads(args.threads)
    docs = list(read_docs(args.data, spacy.blank("en").vocab))
    random.Random(args.seed).shuffle(docs)
    pool = docs[: args.pool]
    queries = [d for d in docs[args.pool :] if d.ents][: args.queries]
    for query in queries:  # the span retriever's candidates: the gold entity strings (oracle pre-extraction)
        query.spans["candidates"] = [Span(query, e.start, e.end) for e in query.ents]
    sources = {"model": lambda: InputEmbeddings.of(causal_lm_v1(args.model, device="cpu"))}
    if args.encoder:
        sources["encoder"] = lambda: EncoderEmbeddings(args.encoder)
    configs = [("random", "-", RandomRetriever(k=5, seed=args.seed))]
    for source in sources:
        configs += [
            ("sentence", source, SentenceRetriever(k=5)),
            ("word (idf)", source, WordRetriever(k=5, weighting="idf")),
            ("word (uniform)", source, WordRetriever(k=5, weighting="uniform")),
            ("span (gold query spans)", source, SpanRetriever(k=5)),
        ]
    loaded: dict = {}
    rows = []
    for name, source, retriever in configs:
        if source in sources:
            if source not in loaded:
                loaded[source] = sources[source]()
            retriever.bind(lambda spec, s=source: loaded[s])
        start = time.perf_counter()
        retriever.fit(pool)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        retrieved = retriever.retrieve(queries)
        per_query = (time.perf_counter() - start) / len(queries)
        top1, top5 = [], []
        for query, ids in zip(queries, retrieved, strict=True):
            gold = {e.label_ for e in query.ents}
            for top, k in ((top1, 1), (top5, 5)):
                found = {label for i in ids[:k] for label in retriever.pool[i].entities}
                top.append(len(gold & found) / len(gold))
        row = {
            "retriever": name,
            "embeddings": {"model": args.model, "encoder": args.encoder}.get(source, "-"),
            "top1_type_recall": statistics.mean(top1),
            "top5_type_recall": statistics.mean(top5),
            "ms_per_query": 1000 * per_query,
            "index_seconds": fit_seconds,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")
    print(
        f"\nFew-NERD INTER dev: pool {len(pool)} sentences, {len(queries)} queries with entities; share of a query's "
        "gold types found in the top-k retrieved sentences\n"
    )
    print("| retriever | embeddings | top-1 | top-5 | ms/query | index s |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['retriever']} | {r['embeddings']} | {100 * r['top1_type_recall']:.1f}% | "
            f"{100 * r['top5_type_recall']:.1f}% | {r['ms_per_query']:.1f} | {r['index_seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
