"""Gold answers through the real answer path: render, parse, align jointly, resolve; almost nothing may be lost.

For every sentence of a public test set, each label's answer is its gold entity strings in order of appearance,
written in the template's response format. `FewShotNERTask.annotate` then has to find every gold entity again.
What it may miss is what the answers cannot tell: the same string also occurs earlier outside any entity of its
label, the same string is gold for two labels, or an entity lies across two chunks. The per-label placement that
`align_jointly` replaced is measured beside it (run with `-s` to see both F1s and what is lost).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from spacy.tokens import Doc
from spacy.vocab import Vocab

from spacy_fsner.data.readers import read_conll, read_tagged
from spacy_fsner.decoding import alignment
from spacy_fsner.pipeline import task as task_module
from spacy_fsner.pipeline.task import make_ner_task
from spacy_fsner.prompts.templates import PromptTemplate, alpaca_template_v1, cllmfs_template_v1, joint_template_v1
from spacy_fsner.ty import DocGenerations, DocPrompts, Generation

DATASETS = {
    "conll2003": ("conll2003/eng.testb", read_conll),
    "fewnerd-inter": ("fewnerd/inter_sentences/test-inter.txt", read_tagged),
}
TEMPLATES = {"cllmfs": cllmfs_template_v1, "alpaca": alpaca_template_v1, "joint": joint_template_v1}
MIN_F1 = 0.999

Entity = tuple[int, int, str]


@cache
def _gold_docs(path: Path, dataset: str) -> list[Doc]:
    return DATASETS[dataset][1](path, Vocab())


def _per_label(source, answers, starts, ends) -> list[alignment.Alignment]:
    """The placement before joint alignment: every label on its own."""
    return [alignment.align_in_order(source, strings, starts, ends) for strings in answers]


def _gold_generations(gold: list[Entity], text: str, prompts: DocPrompts) -> DocGenerations:
    """Each request answered with its label's gold strings inside its chunk (a joint request: every label's, typed,
    in text order); one token per entity, logprob -1."""
    generations = []
    for request, label, offset in zip(prompts.requests, prompts.labels, prompts.offsets, strict=True):
        typed = request.fmt.typed
        inside = [
            (text[s:e], lab) if typed else text[s:e]
            for s, e, lab in gold
            if (typed or lab == label) and offset <= s and e <= offset + len(request.source)
        ]
        pieces = [request.fmt.render([entity])[: -len(request.fmt.end)] for entity in inside] + [request.fmt.end]
        ends = [len("".join(pieces[: i + 1]).encode()) for i in range(len(pieces))]
        logprobs = [-1.0] * len(inside) + [0.0]
        generations.append(Generation("".join(pieces), list(range(len(pieces))), logprobs, ends, True, request.fmt))
    return DocGenerations(prompts, generations)


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, gold: set[Entity], predicted: set[Entity]) -> None:
        self.tp += len(gold & predicted)
        self.fp += len(predicted - gold)
        self.fn += len(gold - predicted)

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0


@dataclass
class RoundTrip:
    joint: Counts = field(default_factory=Counts)
    per_label: Counts = field(default_factory=Counts)
    lost: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)


def _why_lost(entity: Entity, doc: Doc, gold: list[Entity], prompts: DocPrompts) -> str:
    """Why the gold `entity` is not among `doc.ents` after the joint round trip."""
    start, end, label = entity
    if not any(o <= start and end <= o + len(r.source) for r, o in zip(prompts.requests, prompts.offsets, strict=True)):
        return "split across two chunks"
    candidates = [(s.start_char, s.end_char) for s in doc.spans["fsner"] if s.label_ == label]
    if (start, end) in candidates:
        return "placed, then dropped in a conflict with another label"
    text = doc.text[start:end]
    elsewhere = [(s, e) for s, e in candidates if doc.text[s:e] == text and (s, e, label) not in gold]
    if not elsewhere:
        return "other"
    if any((s, e) == (gs, ge) for s, e in elsewhere for gs, ge, _ in gold):
        return "same string gold for two labels, their occurrences swapped (order cannot tell)"
    if any(s < ge and gs < e for s, e in elsewhere for gs, ge, _ in gold):
        return "placed inside another entity (no free occurrence left)"
    return "placed on another occurrence outside any entity (order cannot tell)"


def _round_trip(docs: list[Doc], template: PromptTemplate, monkeypatch) -> RoundTrip:
    labels = sorted({ent.label_ for doc in docs for ent in doc.ents})
    task = make_ner_task(labels, template=template)
    result = RoundTrip()
    per_label, moved = False, False

    def align(source, answers, starts, ends):
        """`align_jointly` as annotate calls it, noting whether it placed anything unlike the per-label way."""
        nonlocal moved
        if per_label:
            return _per_label(source, answers, starts, ends)
        joint = alignment.align_jointly(source, answers, starts, ends)
        if sum(bool(a.spans) for a in joint) > 1:  # with one label placed, nothing can have moved
            moved |= [a.spans for a in joint] != [a.spans for a in _per_label(source, answers, starts, ends)]
        return joint

    def fresh(doc: Doc) -> Doc:
        return Doc(doc.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])

    monkeypatch.setattr(task_module, "align_jointly", align)
    predicted = [fresh(doc) for doc in docs]
    for doc, reference, prompts in zip(predicted, docs, task.generate_prompts(predicted), strict=True):
        gold = sorted((e.start_char, e.end_char, e.label_) for e in reference.ents)
        moved = False
        task.annotate(doc, _gold_generations(gold, doc.text, prompts))
        found = {(e.start_char, e.end_char, e.label_) for e in doc.ents}
        result.joint.add(set(gold), found)
        found_before = found
        if moved:  # only then can the per-label placement give other entities: annotate again with it
            per_label = True
            before = task.annotate(fresh(doc), _gold_generations(gold, doc.text, prompts))
            per_label = False
            found_before = {(e.start_char, e.end_char, e.label_) for e in before.ents}
        result.per_label.add(set(gold), found_before)
        for entity in sorted(set(gold) - found):
            why = _why_lost(entity, doc, gold, prompts)
            result.lost[why] += 1
            context = doc.text if len(doc.text) < 200 else doc.text[max(entity[0] - 80, 0) : entity[1] + 80]
            result.examples.setdefault(why, []).append(f"{doc.text[entity[0] : entity[1]]!r} {entity[2]}: {context}")
    return result


@pytest.mark.slow
@pytest.mark.parametrize("template_name", list(TEMPLATES))
@pytest.mark.parametrize("dataset", list(DATASETS))
def test_gold_answers_survive_the_round_trip(shared_data: Path, dataset: str, template_name: str, monkeypatch):
    docs = _gold_docs(shared_data / DATASETS[dataset][0], dataset)
    began = time.perf_counter()
    result = _round_trip(docs, TEMPLATES[template_name](), monkeypatch)
    gold_total = result.joint.tp + result.joint.fn
    assert gold_total == sum(len(doc.ents) for doc in docs)
    print(
        f"\n{dataset} / {template_name}: {len(docs)} sentences, {gold_total} gold entities, "
        f"{time.perf_counter() - began:.1f}s\n"
        f"  per-label F1 {result.per_label.f1:.5f} (fp {result.per_label.fp}, fn {result.per_label.fn})\n"
        f"  joint     F1 {result.joint.f1:.5f} (fp {result.joint.fp}, fn {result.joint.fn})"
    )
    for why, count in result.lost.most_common():
        print(f"  lost {count}: {why}")
        for example in result.examples[why][:3]:
            print(f"      {example}")
    assert result.joint.f1 >= MIN_F1, dict(result.lost)
    assert result.joint.f1 >= result.per_label.f1
    assert result.joint.fn <= result.per_label.fn
