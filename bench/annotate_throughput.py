"""Corpus annotation's throughput: `annotate` in this process against Ray Data with N workers on one machine.

The same pipeline (the fsner component as it comes: SmolLM2 with the shipped base adapter, the joint template;
CoNLL-2003's four types, the first --demonstrations training sentences with entities in every prompt) and the same
CoNLL-2003 test sentences go through `spacy_fsner.annotation.annotate` twice into DocBin shards: once here (torch
with --threads threads), once with `--ray-address local --workers N` (N actors of one CPU, one torch thread each).
Each time is the whole command's: loading the pipeline, and for Ray starting it and its actors, then annotating.
The table gives docs/s for each, and whether both runs found the same entities, doc by doc.

On one machine, the two runs share the same cores: this measures what Ray costs (start-up, one pipeline per actor,
shards sent to the actors and back) against parallelism across processes instead of threads. It does not measure a
cluster's scaling, which grows with the workers' GPUs.

    python -m bench.annotate_throughput --sentences 64 --workers 2 --threads 2
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from itertools import islice
from pathlib import Path

from bench.common import CONLL, CONLL_LABELS, base_parser, set_threads


def main() -> None:
    parser = base_parser(__doc__, threads=2)
    parser.add_argument("--data", type=Path, default=CONLL, help="CoNLL-2003's directory (eng.testb is read)")
    parser.add_argument("--sentences", type=int, default=64, help="the first N test sentences")
    parser.add_argument("--demonstrations", type=int, default=3, help="training sentences shown in every prompt")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (one CPU each)")
    parser.add_argument("--shard-size", type=int, default=16, help="documents per shard")
    parser.add_argument("--batch-size", type=int, default=8, help="docs per nlp.pipe batch")
    parser.add_argument("--output", type=Path, default=Path("bench/results/annotate_throughput.json"))
    args = parser.parse_args()
    threads = set_threads(args.threads)

    import spacy

    from spacy_fsner.annotation import RaySettings, annotate, read_docs
    from spacy_fsner.data.readers import read_docs as read_corpus

    nlp = spacy.blank("en")
    component = nlp.add_pipe("fsner", config={"labels": list(CONLL_LABELS), "label_definitions": CONLL_LABELS})
    training = (doc for doc in read_corpus(args.data / "eng.train", nlp.vocab) if doc.ents)
    component.adapt(list(islice(training, args.demonstrations)))  # zero-shot, it finds next to nothing
    texts = [doc.text for doc in islice(read_corpus(args.data / "eng.testb", nlp.vocab), args.sentences)]
    rows, entities = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        pipeline, source = Path(scratch) / "pipeline", Path(scratch) / "sentences.txt"
        nlp.to_disk(pipeline)
        source.write_text("".join(text + "\n" for text in texts), encoding="utf-8")
        runs = {"here": None, f"ray, {args.workers} workers": RaySettings("local", workers=args.workers)}
        for name, ray in runs.items():
            output = Path(scratch) / name.replace(" ", "_").replace(",", "")
            start = time.perf_counter()
            annotate(pipeline, source, output, shard_size=args.shard_size, batch_size=args.batch_size, ray=ray)
            seconds = time.perf_counter() - start
            docs = list(read_docs(output, nlp.vocab))
            entities[name] = [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in docs]
            rows.append(
                {"run": name, "docs": len(docs), "seconds": round(seconds, 1), "docs_per_s": len(docs) / seconds}
            )
    first, *others = entities.values()
    same = all(other == first for other in others)
    settings = {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "torch_threads": threads}
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()}
    print("| run | docs | s | docs/s |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['run']} | {row['docs']} | {row['seconds']} | {row['docs_per_s']:.2f} |")
    print(f"\nsame entities in both runs: {same} ({sum(map(len, first))} entities)")
    print(f"load average while measuring: {machine['load_average']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "same_entities": same, "settings": settings, "machine": machine}
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
