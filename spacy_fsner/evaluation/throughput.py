"""Throughput of `nlp.pipe` against the naive loop, in one run, on the same model and data (what
`python -m spacy_fsner benchmark` runs and prints).

What users run: a real model (SmolLM2 unless `model` says otherwise), prompts with demonstrations so that entities
are written, few labels and many. For each template and label count, the naive loop (what a hand-rolled script does:
one `model.generate` call per (sentence, label), no batching, no reuse of shared prompt parts; same constraint, same
greedy decoding) runs beside `nlp.pipe`, and both must give the same entities. Tokens processed are set against a
lower bound: each distinct prompt part once (`prompt_tree_tokens`) plus each generated token fed back.

`run_benchmark` runs it all from plain arguments and returns a `Throughput` (one `Row` per template and label count);
`format_tables` lays that out as the command's Markdown tables, `entity_records` as the entities each path found.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ..ty import DocGenerations
from .resources import PeakMemory, Roofline, describe_model

TEMPLATES = {
    "cllmfs": "spacy_fsner.CLLMFSTemplate.v1",
    "shared": "spacy_fsner.SharedInputTemplate.v1",
    "joint": "spacy_fsner.JointTemplate.v1",
}
"""The templates a benchmark can run, by short name."""


class BenchmarkError(ValueError):
    """Arguments the benchmark cannot run with (the command reports it as a bad option)."""


@dataclass
class Run:
    """One path over one sentence set: speed, tokens per sentence and what it predicted."""

    seconds: float
    sentences: int
    counts: Counter
    mib: float
    ents: list[list[tuple[int, int, str]]]

    @property
    def per_sentence(self) -> float:
        return self.seconds / self.sentences

    def tokens(self, key: str | None = None) -> float:
        keys = ("prompt_tokens", "pad_tokens", "decode_tokens") if key is None else (key,)
        return sum(self.counts[k] for k in keys) / self.sentences


def short_label(label: str) -> str:
    """Few-NERD's fine type without its coarse type (`person-athlete` -> `athlete`, `organization-government/
    governmentagency` -> `government`; `location-other` -> `location`): label names of 1-3 tokens, as OntoNotes'."""
    coarse, _, fine = label.partition("-")
    return coarse if not fine or fine == "other" else fine.split("/")[0]


def with_short_labels(docs: list) -> list:
    """`docs` with every entity renamed by `short_label` (in place; returned for chaining)."""
    from spacy.tokens import Span

    for doc in docs:
        doc.ents = [Span(doc, e.start, e.end, label=short_label(e.label_)) for e in doc.ents]
    return docs


def pick_labels(docs, n: int) -> list[str]:
    """The `n` most frequent entity types of `docs` (ties by name)."""
    frequency = Counter(e.label_ for doc in docs for e in doc.ents)
    return [label for label, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))][:n]


def pick_demonstrations(docs, labels: list[str], shots: int) -> list:
    """`shots` docs chosen greedily to show entities of as many of `labels` as possible (short docs first)."""
    chosen, covered = [], set()
    pool = sorted(docs, key=len)
    for _ in range(shots):
        best = max(pool, key=lambda d: (len({e.label_ for e in d.ents if e.label_ in labels} - covered), -len(d)))
        chosen.append(best)
        covered |= {e.label_ for e in best.ents}
        pool.remove(best)
    return chosen


def _timed(run: Callable[[], list], device_type: str) -> tuple[list, float, float]:
    with PeakMemory(device_type) as memory:
        start = time.perf_counter()
        docs = run()
        seconds = time.perf_counter() - start
    return docs, seconds, memory.mib


def naive_loop(nlp, texts: list[str]) -> list:
    """What a hand-rolled script does: one `model.generate` call per (sentence, label)."""
    component = nlp.get_pipe("fsner")
    generator = component.model.generator
    out = []
    for doc in map(nlp.make_doc, texts):
        (prompts,) = component.task.generate_prompts([doc])
        generations = [generator.generate_naive(request) for request in prompts.requests]
        out.append(component.task.annotate(doc, DocGenerations(prompts, generations)))
    return out


def fast_path(nlp, texts: list[str]) -> list:
    return list(nlp.pipe(texts, batch_size=len(texts)))


@dataclass
class Row:
    """One template at one label count: the runs ("naive", then "pipe"), the lower bound of tokens per sentence,
    and whether the naive loop's entities equal the fast path's on the sentences both ran."""

    template: str
    labels: int
    runs: dict[str, Run]
    bound: float
    same: bool


@dataclass
class Throughput:
    """A whole benchmark: its rows (for each template, for each label count) and what it ran on."""

    rows: list[Row]
    data: Path
    shots: int
    model: str  # `describe_model`'s line
    device_type: str
    threads: int
    max_new_tokens: int
    batch_size: int
    batch_tokens: int
    label_counts: list[int]
    templates: list[str]
    roofline: Roofline | None = None

    @property
    def same(self) -> bool:
        return all(row.same for row in self.rows)


@dataclass
class _Sentences:
    pool: list = field(repr=False)
    texts: list[str]
    naive: list[str]
    labels: list[str]
    """The pool's most frequent types, then the extra labels it lacks."""


def _read_sentences(
    data: Path, sentences: int, naive_sentences: int, pool: int, label_counts: Sequence[int], extra_labels, short: bool
) -> _Sentences:
    import spacy

    from ..data.readers import read_corpus as read_gold_docs

    docs = read_gold_docs(data, spacy.blank("en"))
    extra = [label for label in extra_labels if label]
    if short:
        with_short_labels(docs)
        extra = [label for label in map(short_label, extra) if label]
    if len(docs) < pool + sentences:
        raise BenchmarkError(f"{data} has {len(docs)} sentences: fewer than --pool {pool} + --sentences {sentences}")
    pool_docs, texts = docs[:pool], [d.text for d in docs[pool : pool + sentences]]
    available = pick_labels(pool_docs, max(label_counts))
    available += [label for label in extra if label not in available]
    return _Sentences(pool_docs, texts, texts[: min(naive_sentences, sentences)], available)


def _pipelines(templates: Sequence[str], labels: list[str], settings: dict) -> dict:
    """One pipeline per template, all on one copy of the model."""
    import spacy

    pipelines, loaded = {}, None
    for template_name in templates:
        nlp = spacy.blank("en")
        config = {"labels": labels[:1], "template": {"@misc": TEMPLATES[template_name]}, "model": settings}
        component = nlp.add_pipe("fsner", config=config)
        if loaded is None:
            loaded = component.model.loaded_model
        else:
            component.model.attach_model(loaded)
        pipelines[template_name] = nlp
    return pipelines


def _row(nlp, template: str, n: int, sentences: _Sentences, shots: int, device_type: str) -> Row:
    from ..decoding.prefix_tree import prompt_tree_tokens

    component = nlp.get_pipe("fsner")
    generator = component.model.generator
    chosen = sentences.labels[:n]
    if len(chosen) < n:
        raise BenchmarkError(f"the pool has only {len(sentences.labels)} entity types; lower --labels")
    component.task.set_labels(chosen)
    component.task.set_demonstrations(pick_demonstrations(sentences.pool, chosen, shots))
    nlp("Warm-up sentence .")

    texts, naive_texts = sentences.texts, sentences.naive
    runs = {}
    for path, run, count in (
        ("naive", partial(naive_loop, nlp, naive_texts), len(naive_texts)),
        ("pipe", partial(fast_path, nlp, texts), len(texts)),
    ):
        generator.counts.clear()
        out, seconds, mib = _timed(run, device_type)
        ents = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in out]
        runs[path] = Run(seconds, count, Counter(generator.counts), mib, ents)
    requests = [r for p in component.task.generate_prompts(map(nlp.make_doc, texts)) for r in p.requests]
    bound = (prompt_tree_tokens(generator, requests) + runs["pipe"].counts["decode_tokens"]) / len(texts)
    same = runs["naive"].ents == runs["pipe"].ents[: len(naive_texts)]
    return Row(template, n, runs, bound, same)


def run_benchmark(
    data: Path,
    *,
    sentences: int,
    naive_sentences: int,
    pool: int,
    label_counts: Sequence[int],
    extra_labels: Sequence[str],
    templates: Sequence[str],
    shots: int,
    model: str,
    adapter: str | None,
    short_labels: bool,
    batch_size: int,
    batch_tokens: int,
    max_new_tokens: int,
    device: str,
    dtype: str,
    threads: int,
    peak_tflops: float,
    peak_tbps: float,
) -> Throughput:
    """Both paths for each template and label count (the `benchmark` command's options, as values: the command
    holds their defaults; 0 for `batch_size`/`batch_tokens`/`threads`: the device's or torch's). Raises
    `BenchmarkError` for arguments it cannot run with."""
    import torch

    from ..models.tiny import TinyModelSpec, build_tiny_model, tokenizer_texts

    if threads:
        torch.set_num_threads(threads)
    label_counts, templates = list(label_counts), list(templates)
    unknown = [t for t in templates if t not in TEMPLATES]
    if unknown:
        raise BenchmarkError(f"unknown templates {unknown}; use {list(TEMPLATES)}")
    chosen = _read_sentences(data, sentences, naive_sentences, pool, label_counts, extra_labels, short_labels)

    with tempfile.TemporaryDirectory() as tmp:
        name = model
        if model == "tiny":
            spec = TinyModelSpec(256, 4, num_heads=8, num_kv_heads=4, intermediate_size=1024, vocab_size=4096)
            model = str(build_tiny_model(Path(tmp), tokenizer_texts(None) + chosen.texts, spec))
            name = "random 4-layer hidden-256 Llama"
        if adapter:
            name += f" + LoRA adapter {adapter}"
        settings = {
            "@llm_models": "spacy_fsner.CausalLM.v1",
            "name": model,
            "adapter": str(adapter) if adapter else None,
            "batch_size": batch_size or None,
            "batch_tokens": batch_tokens or None,
            "max_new_tokens": max_new_tokens,
            "device": device,
            "dtype": dtype,
        }
        pipelines = _pipelines(templates, chosen.labels, settings)
        generator = pipelines[templates[0]].get_pipe("fsner").model.generator
        device_type = generator.model.device.type
        described = describe_model(generator.model, name)
        roofline = Roofline.of(generator.model, peak_tflops, peak_tbps) if peak_tflops and peak_tbps else None
        rows = [
            _row(pipelines[template_name], template_name, n, chosen, shots, device_type)
            for template_name in templates
            for n in label_counts
        ]
        generator = pipelines[templates[-1]].get_pipe("fsner").model.generator  # the settings line shows the last

    return Throughput(
        rows,
        data=data,
        shots=shots,
        model=described,
        device_type=device_type,
        threads=torch.get_num_threads(),
        max_new_tokens=max_new_tokens,
        batch_size=generator.config.batch_size,
        batch_tokens=generator.config.batch_tokens,
        label_counts=label_counts,
        templates=templates,
        roofline=roofline,
    )


def format_tables(result: Throughput) -> str:
    """The run's settings, then per path: speed, tokens per sentence against the bound, pad share, peak memory and
    entities found; per row: the bound, the speed-up and whether the paths agree; the many/few labels time ratio."""
    first = result.rows[0].runs
    lines = [
        f"\n{first['pipe'].sentences} sentences of {result.data} (naive loop: the first {first['naive'].sentences}), "
        f"{result.shots} demonstrations, {result.model}, {result.device_type}, {result.threads} threads, "
        f"max_new_tokens={result.max_new_tokens}, batch_size={result.batch_size}, "
        f"batch_tokens={result.batch_tokens}\n"
    ]
    roofline = result.roofline
    extra = " roofline s/sentence | x roofline |" if roofline else ""
    lines.append(
        "| template | labels | path | sentences/s | s/sentence | tokens/sentence | x bound | pad share | "
        f"peak MiB | entities |{extra}"
    )
    lines.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * bool(roofline))
    for row in result.rows:
        for path, run in row.runs.items():
            tokens = run.tokens()
            line = (
                f"| {row.template} | {row.labels} | {path} | {1 / run.per_sentence:.2f} | {run.per_sentence:.3f} | "
                f"{tokens:.1f} | {tokens / row.bound:.2f} | {run.tokens('pad_tokens') / tokens:.1%} | "
                f"{run.mib:.0f} | {sum(map(len, run.ents))} |"
            )
            if roofline:
                floor = roofline.seconds(run.counts) / run.sentences
                line += f" {floor:.4f} | {run.per_sentence / floor:.1f} |"
            lines.append(line)
    if roofline:
        lines.append(f"\nroofline: {roofline}")
    lines.append("\n| template | labels | lower bound tokens/sentence | speed-up pipe/naive | same entities |")
    lines.append("|---|---:|---:|---:|---|")
    for row in result.rows:
        speedup = row.runs["naive"].per_sentence / row.runs["pipe"].per_sentence
        lines.append(f"| {row.template} | {row.labels} | {row.bound:.1f} | {speedup:.2f}x | {row.same} |")
    if len(result.label_counts) > 1:
        few, many = min(result.label_counts), max(result.label_counts)
        lines.append(f"\nnlp.pipe seconds per sentence, {many} labels / {few} labels:")
        for template_name in result.templates:
            per = {row.labels: row.runs["pipe"].per_sentence for row in result.rows if row.template == template_name}
            lines.append(f"- {template_name}: {per[many] / per[few]:.2f}x")
    lines.extend(_joint_against_per_label(result))
    return "\n".join(lines)


def _joint_against_per_label(result: Throughput) -> list[str]:
    """With the joint template beside a per-label one: for each label count, the per-label template's naive loop
    (one `generate` per sentence and label: the hand-rolled script a user would otherwise write) against the joint
    template's `nlp.pipe` (one batched prompt per sentence). Different prompts, so not the same entities."""
    per_label = [t for t in result.templates if t != "joint"]
    if "joint" not in result.templates or not per_label:
        return []
    pipe = {row.labels: row.runs["pipe"].per_sentence for row in result.rows if row.template == "joint"}
    lines = [
        "\n| labels | per-label naive loop | s/sentence | joint nlp.pipe s/sentence | speed-up |",
        "|---:|---|---:|---:|---:|",
    ]
    for row in result.rows:
        if row.template in per_label:
            naive, joint = row.runs["naive"].per_sentence, pipe[row.labels]
            lines.append(f"| {row.labels} | {row.template} | {naive:.3f} | {joint:.3f} | {naive / joint:.2f}x |")
    return lines


def entity_records(result: Throughput) -> list[dict]:
    """One JSON-ready record per run, in run order (for each template, for each label count: naive, then pipe):
    `{"template", "labels", "path", "ents"}`, `ents` holding one `[[start, end, label], ...]` list per sentence."""
    return [
        {"template": row.template, "labels": row.labels, "path": path, "ents": [list(map(list, s)) for s in run.ents]}
        for row in result.rows
        for path, run in row.runs.items()
    ]
