"""A domain and label set the base adapter never saw: does training on a few hundred sentences of them help?

GUM (Georgetown University Multilayer corpus: academic writing, interviews, how-to guides, travel guides, ...) with
its 11 types (abstract, animal, event, object, organization, person, place, plant, quantity, substance, time), whose
mentions include pronouns and common-noun phrases, not only names: nothing like Few-NERD's named entities.

- Training sentences: those of the 40 published GUM support sets (ProML's and CONTaiNER's, 1- and 5-shot), without
  duplicates and without any sentence the test sentences hold (a few hundred).
- Test sentences: the first `--test-sentences` of GUM's test set.
- Pipelines, all with the joint template, the types' definitions and no demonstrations: SmolLM2 untrained; with the
  shipped base adapter; the base adapter continued on the training sentences (`configs/target.cfg`); and, with
  `--scratch`, a new LoRA trained on them from SmolLM2 alone (the same config with `--paths.adapter null`): what the
  base adapter adds to target training.

Each sentence's span-exact counts are kept (JSONL per pipeline: a stopped run resumes; training resumes from its
checkpoints); the table gives F1 with its 95% bootstrap interval over sentences and the paired difference from the
untrained pipeline.

    python -m bench.new_domain --test-sentences 300 --epochs 1
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.common import REPO, SMOLLM2, base_parser, paired_table, set_threads

GUM = Path("../shared/data/gum")
"""GUM's test file and the support sets, relative to the repository root (where the script runs)."""

DEFINITIONS = {
    "abstract": "an abstract notion, idea, property or state, such as a theory, a feeling or a problem",
    "animal": "an animal or a kind of animal",
    "event": "something that happens, such as a meeting, a war, a trip or a process",
    "object": "a concrete physical object or a kind of object, such as a book, a phone or a building",
    "organization": "an organisation, company, institution or group of people acting together",
    "person": "a person or group of persons, named or not, including pronouns such as I, she or they",
    "place": "a place: a country, city, region, address, building as a location, or a natural location",
    "plant": "a plant or a kind of plant",
    "quantity": "an amount or measurement with its unit, such as 5 km or three days",
    "substance": "a substance or material, such as water, gold or a drug",
    "time": "a point or span of time, such as a date, a year, a season or yesterday",
}
"""GUM's 11 types, each with a definition (the names alone, `abstract` or `object`, say little)."""


def prepare(output: Path, test_sentences: int) -> tuple[Path, Path]:
    """The training and test DocBins (written once)."""
    import spacy
    from spacy.tokens import DocBin

    from spacy_fsner.data.readers import read_docs

    train_path, test_path = output / "train.spacy", output / "test.spacy"
    if not train_path.is_file():
        vocab = spacy.blank("en").vocab
        test = list(read_docs(GUM / "gum-test.txt", vocab))[:test_sentences]
        held_out = {doc.text for doc in test}
        seen, train = set(), []
        for path in sorted(GUM.glob("support_*/*shot/*.txt")):
            for doc in read_docs(path, vocab):
                if doc.text not in seen and doc.text not in held_out:
                    seen.add(doc.text)
                    train.append(doc)
        output.mkdir(parents=True, exist_ok=True)
        DocBin(docs=train).to_disk(train_path)
        DocBin(docs=test).to_disk(test_path)
    return train_path, test_path


def untrained(adapter: str | None):
    """SmolLM2 (+ `adapter`) with the joint template and GUM's definitions, no demonstrations."""
    import spacy

    nlp = spacy.blank("en")
    model = {"@llm_models": "spacy_fsner.CausalLM.v1", "name": SMOLLM2, "adapter": adapter, "max_new_tokens": 128}
    config = {
        "labels": list(DEFINITIONS),
        "label_definitions": DEFINITIONS,
        "template": {"@misc": "spacy_fsner.JointTemplate.v1"},
        "model": model,
    }
    nlp.add_pipe("fsner", config=config)
    return nlp


def trained(train: Path, adapter: str | None, output: Path, epochs: float | None):
    """`configs/target.cfg` on the training sentences (for `epochs`, None: the config's), continuing `adapter`
    (None: a new LoRA); its pipeline."""
    import spacy

    from spacy_fsner.training.run import run_training

    if not (output / "pipeline").is_dir():
        overrides = {
            "paths.train": str(train),
            "paths.adapter": adapter,
            "components.fsner.labels": list(DEFINITIONS),
            **{f"components.fsner.label_definitions.{k}": v for k, v in DEFINITIONS.items()},
        }
        if epochs is not None:
            overrides["train.epochs"] = epochs
        run_training(REPO / "configs" / "target.cfg", output, overrides)
    return spacy.load(output / "pipeline")


def sentence_counts(nlp, test: Path, counts_file: Path, batch_size: int) -> list[dict]:
    """Each test sentence's span-exact counts (and the mean seconds per sentence), kept in `counts_file`."""
    if counts_file.is_file():
        return [json.loads(line) for line in counts_file.read_text().splitlines()]
    from spacy.tokens import DocBin

    from spacy_fsner.evaluation.intervals import unit_counts
    from spacy_fsner.evaluation.protocols import corpus_examples

    docs = list(DocBin().from_disk(test).get_docs(nlp.vocab))
    start = time.perf_counter()
    examples = corpus_examples(nlp, docs, batch_size=batch_size, progress=True)
    seconds = (time.perf_counter() - start) / len(docs)
    rows = [
        {"sentence": i, "tp": int(tp), "fp": int(fp), "fn": int(fn), "seconds": seconds}
        for i, (tp, fp, fn) in enumerate(unit_counts([[example] for example in examples]).tolist())
    ]
    counts_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def main() -> None:
    parser = base_parser(__doc__, threads=2)
    parser.add_argument("--test-sentences", type=int, default=300)
    parser.add_argument("--scratch", action="store_true", help="also train a new LoRA from SmolLM2 alone")
    parser.add_argument("--epochs", type=float, default=None, help="training epochs (default: target.cfg's)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per nlp.pipe batch")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap draws")
    parser.add_argument("--output", type=Path, default=Path("bench/results/new_domain"))
    args = parser.parse_args()
    threads = set_threads(args.threads)
    from spacy_fsner.models.adapters import BASE_ADAPTER

    train, test = prepare(args.output, args.test_sentences)
    pipelines = {
        "untrained": lambda: untrained(None),
        "base adapter": lambda: untrained(BASE_ADAPTER),
        "base adapter + GUM training": lambda: trained(train, BASE_ADAPTER, args.output / "target-base", args.epochs),
    }
    if args.scratch:
        pipelines["new LoRA, GUM training only"] = lambda: trained(
            train, None, args.output / "target-scratch", args.epochs
        )
    rows = {}
    for name, build in pipelines.items():
        counts_file = args.output / f"{name.replace(' ', '_').replace(',', '')}.jsonl"
        nlp = None if counts_file.is_file() else build()  # a finished pipeline's counts are read back
        rows[name] = sentence_counts(nlp, test, counts_file, args.batch_size)
    from spacy.tokens import DocBin

    n_train = len(DocBin().from_disk(train))
    print(
        f"\nGUM, 11 types: {n_train} training sentences (the published support sets, deduplicated, none "
        f"from the test sentences), {args.test_sentences} test sentences; SmolLM2, joint template, definitions, no "
        f"demonstrations; {threads} threads; span-exact F1, 95% bootstrap over sentences ({args.resamples} draws)\n"
    )
    print("\n".join(paired_table(rows, args.resamples, score="span F1", unit="sentence")))


if __name__ == "__main__":
    main()
