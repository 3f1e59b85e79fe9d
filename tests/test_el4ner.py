"""EL4NER with scripted members: union, vote, validation, each stage switched off, the pool saved with the pipeline;
and once end to end with real decoding and scoring on the tiny model."""

import math

import pytest
import spacy
from spacy.training import Example
from spacy_llm.registry import registry as llm_registry
from test_retrieval import ToyEmbeddings, doc

from spacy_fsner.ty import Generation

LABELS = ["PER", "LOC", "ORG"]
POOL = [
    doc("Merkel and Obama .", [("Merkel", "PER"), ("Obama", "PER")]),
    doc("Paris is a city .", [("Paris", "LOC")]),
    doc("Shares fell at the bank .", [("bank", "ORG")]),
]
SENTENCE = "Merkel visited Paris and the bank ."


class ScriptedMember:
    """Extracts the strings of `spans` (per input text); votes `types[span]`; says No to `reject` (span, type)."""

    def __init__(
        self, spans: dict, types: dict, reject: list | None = None, confidence: float = 0.0, margin: float = 1.0
    ) -> None:
        self.spans, self.types, self.reject = spans, types, {tuple(r) for r in reject or []}
        self.confidence = confidence
        self.margin = margin  # how much more likely its Yes (or No) is than the other answer, in log-probability
        self.prompts: list[str] = []
        self.questions: list[str] = []

    def extract(self, requests):
        out = []
        for request in requests:
            self.prompts.append(request.prompt)
            entities = self.spans.get(request.source, [])
            pieces = [request.fmt.render([e])[: -len(request.fmt.end)] for e in entities] + [request.fmt.end]
            ends = [len("".join(pieces[: i + 1]).encode()) for i in range(len(pieces))]
            out.append(
                Generation("".join(pieces), list(range(len(pieces))), [0.0] * len(pieces), ends, True, request.fmt)
            )
        return out

    def score(self, prefix, questions):
        scores = []
        for question, options in questions:
            self.questions.append(question)
            if question.endswith("?"):  # validation: "<span> is <type>?"
                span, label = question[:-1].split(" is ")
                no = (span, label) in self.reject
                scores.append([-1.0 - self.margin if no else -1.0, -1.0 if no else -1.0 - self.margin])
            else:  # classification: "<span>:"
                chosen = self.types.get(question[:-1])
                scores.append([self.confidence if o.strip() == chosen else -5.0 for o in options])
        return scores


if "spacy_fsner.test.ScriptedMember.v1" not in llm_registry.llm_models.get_all():
    llm_registry.llm_models.register(
        "spacy_fsner.test.ScriptedMember.v1",
        func=lambda spans, types, reject=None, confidence=0.0, margin=1.0: ScriptedMember(
            spans, types, reject, confidence, margin
        ),
    )


def member(spans, types, reject=None, confidence=0.0, margin=1.0) -> dict:
    return {
        "margin": margin,
        "@llm_models": "spacy_fsner.test.ScriptedMember.v1",
        "spans": {SENTENCE: spans},
        "types": types,
        "reject": reject or [],
        "confidence": confidence,
    }


def pipeline(members: dict, stages: dict | None = None, retriever: dict | None = None, **settings):
    nlp = spacy.blank("en")
    config = {
        "labels": LABELS,
        "members": members,
        "stages": stages or {},
        "retriever": retriever or {"@misc": "spacy_fsner.SpanRetriever.v1", "k": 1},
        **settings,
    }
    component = nlp.add_pipe("el4ner", config=config)
    component.retriever.bind(lambda spec: ToyEmbeddings())
    nlp.initialize(lambda: [Example(nlp.make_doc(d.text), d) for d in POOL])
    return nlp, component


def ents(doc) -> list[tuple[str, str]]:
    return [(e.text, e.label_) for e in doc.ents]


A = member(["Merkel", "Paris"], {"Merkel": "PER", "Paris": "LOC", "bank": "ORG"})
B = member(["Paris", "bank"], {"Merkel": "PER", "Paris": "LOC", "bank": "LOC"})
C = member(["bank"], {"Merkel": "LOC", "Paris": "LOC", "bank": "ORG"})


def test_union_of_the_members_spans_and_majority_vote_on_types():
    nlp, component = pipeline({"a": A, "b": B, "c": C})
    result = nlp(SENTENCE)
    assert ents(result) == [("Merkel", "PER"), ("Paris", "LOC"), ("bank", "ORG")]
    group = result.spans["el4ner"]
    assert group.attrs["votes"] == pytest.approx([2 / 3, 1.0, 2 / 3])
    assert group.attrs["validated"] == [True, True, True]


def test_union_off_keeps_the_first_members_spans_and_vote_off_its_types():
    nlp, _ = pipeline({"c": C, "a": A, "b": B}, stages={"union": False})
    assert ents(nlp(SENTENCE)) == [("bank", "ORG")]
    nlp, _ = pipeline({"c": C, "a": A, "b": B}, stages={"vote": False})
    assert ents(nlp(SENTENCE)) == [("Merkel", "LOC"), ("Paris", "LOC"), ("bank", "ORG")]


def test_a_tied_vote_goes_to_the_higher_summed_score():
    sure = member(["bank"], {"bank": "ORG"}, confidence=-0.1)
    unsure = member(["bank"], {"bank": "LOC"}, confidence=-3.0)
    nlp, _ = pipeline({"unsure": unsure, "sure": sure})
    assert ents(nlp(SENTENCE)) == [("bank", "ORG")]


def test_validation_drops_what_half_the_members_reject_and_keeps_it_in_spans():
    rejecting = member(["Merkel", "Paris"], {"Merkel": "PER", "Paris": "LOC"}, reject=[["Paris", "LOC"]])
    agreeing = member(["Merkel"], {"Merkel": "PER", "Paris": "LOC"})
    nlp, _ = pipeline({"r": rejecting, "a": agreeing}, rejection="votes")
    result = nlp(SENTENCE)
    assert ents(result) == [("Merkel", "PER")]
    group = result.spans["el4ner"]
    assert [s.text for s in group] == ["Merkel", "Paris"] and group.attrs["validated"] == [True, False]
    assert group.attrs["rejections"] == [0.0, 0.5]
    nlp, _ = pipeline({"r": rejecting, "a": agreeing}, stages={"validation": False})
    assert ents(nlp(SENTENCE)) == [("Merkel", "PER"), ("Paris", "LOC")]
    nlp, _ = pipeline({"r": rejecting, "a": agreeing}, reject_share=1.0, rejection="votes")  # what all reject
    assert ents(nlp(SENTENCE)) == [("Merkel", "PER"), ("Paris", "LOC")]
    nlp, _ = pipeline({"r": rejecting}, reject_share=1.0, rejection="votes")
    assert ents(nlp(SENTENCE)) == [("Merkel", "PER")]
    with pytest.raises(ValueError, match="reject_share"):
        pipeline({"r": rejecting}, reject_share=0.0)


def test_validation_by_probability_lets_a_sure_yes_outweigh_an_unsure_no():
    """The default pools the members' probabilities of No: an unsure No (margin 0.2: P(No) 0.55) against a sure
    Yes (margin 3: P(No) 0.05) keeps the span, where counting votes (one No of two) drops it."""
    doubter = member(["Paris"], {"Paris": "LOC"}, reject=[["Paris", "LOC"]], margin=0.2)
    believer = member(["Paris"], {"Paris": "LOC"}, margin=3.0)
    nlp, component = pipeline({"d": doubter, "b": believer})
    assert component.rejection == "probability"
    result = nlp(SENTENCE)
    assert ents(result) == [("Paris", "LOC")]
    p_no = [1 / (1 + math.exp(-0.2)), 1 / (1 + math.exp(3.0))]  # doubter: No by 0.2; believer: Yes by 3
    assert result.spans["el4ner"].attrs["rejections"] == pytest.approx([sum(p_no) / 2])
    nlp, _ = pipeline({"d": doubter, "b": believer}, rejection="votes")
    assert ents(nlp(SENTENCE)) == []
    sure_no = member(["Paris"], {"Paris": "LOC"}, reject=[["Paris", "LOC"]], margin=3.0)
    unsure_yes = member(["Paris"], {"Paris": "LOC"}, margin=0.2)
    nlp, _ = pipeline({"n": sure_no, "y": unsure_yes})
    assert ents(nlp(SENTENCE)) == []
    with pytest.raises(ValueError, match="rejection"):
        pipeline({"d": doubter}, rejection="majority")


def test_pre_extraction_feeds_span_retrieval():
    places = member(["Paris"], {"Paris": "LOC"})
    nlp, component = pipeline({"p": places})
    result = nlp(SENTENCE)
    assert [s.text for s in result.spans["candidates"]] == ["Paris"]
    members = component.members
    extraction_prompt = members["p"].prompts[-1]
    assert "Paris is a city ." in extraction_prompt, "the pool sentence with a matching span was retrieved"
    assert "Shares fell" not in extraction_prompt and "Merkel and Obama" not in extraction_prompt
    nlp, component = pipeline({"p": places}, stages={"pre_extraction": False})
    result = nlp(SENTENCE)
    assert "candidates" not in result.spans
    assert len(component.members["p"].prompts) == 1, "one extraction pass only"


def test_span_retrieval_off_takes_random_demonstrations():
    places = member(["Paris"], {"Paris": "LOC"})
    nlp, component = pipeline({"p": places}, stages={"span_retrieval": False, "pre_extraction": False})
    nlp(SENTENCE)
    expected = component.random.retrieve([nlp.make_doc(SENTENCE)])[0]
    assert [POOL[i].text in component.members["p"].prompts[-1] for i in range(3)] == [i in expected for i in range(3)]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="at least one member"):
        pipeline({})
    with pytest.raises(ValueError, match="Unknown EL4NER stages"):
        pipeline({"a": A}, stages={"voting": False})
    nlp = spacy.blank("en")
    nlp.add_pipe("el4ner", config={"labels": LABELS, "members": {"a": A}})
    with pytest.raises(ValueError, match="no pool of demonstrations"):
        nlp(SENTENCE)


def test_pool_is_saved_with_the_pipeline(tmp_path):
    nlp, component = pipeline({"a": A, "b": B, "c": C}, retriever={"@misc": "spacy_fsner.RandomRetriever.v1", "k": 2})
    before = ents(nlp(SENTENCE))
    nlp.to_disk(tmp_path / "el4ner")
    loaded = spacy.load(tmp_path / "el4ner")
    assert loaded.get_pipe("el4ner").retriever.pool == component.retriever.pool
    assert ents(loaded(SENTENCE)) == before


def test_episode_adaptation_sets_types_and_pool():
    nlp, component = pipeline({"a": A})
    component.adapt(POOL[:2], labels=["PER", "LOC"])
    assert component.labels == ("PER", "LOC") and len(component.retriever.pool) == 2


def test_end_to_end_with_real_decoding_and_scoring(tiny_model_dir):
    model = {"@llm_models": "spacy_fsner.CausalLM.v1", "name": str(tiny_model_dir), "max_new_tokens": 16}
    nlp = spacy.blank("en")
    component = nlp.add_pipe(
        "el4ner",
        config={"labels": LABELS, "members": {"one": model, "two": {**model, "max_new_tokens": 8}}},
    )
    nlp.initialize(lambda: [Example(nlp.make_doc(d.text), d) for d in POOL])
    result = nlp(SENTENCE)
    group = result.spans["el4ner"]
    assert all(span.label_ in LABELS for span in group)
    assert len(group.attrs["votes"]) == len(group) and all(0 < v <= 1 for v in group.attrs["votes"])
    assert set(result.ents) <= set(group)
    assert len(component.retriever.pool) == len(POOL)


def test_option_scores_equal_the_log_probability_of_the_full_sequence(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spacy_fsner.decoding.encoding import encode_prompt
    from spacy_fsner.decoding.scoring import score_options

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prefix = "### Input:\nMerkel visited Paris .\n\n### Types:\n"
    questions = [
        ("Merkel:", [" PER", " LOC", " ORG-company"]),
        ("Paris is LOC?", [" Yes", " No"]),
        ("Paris:", [" LOC-city-capital"]),
    ]
    # max_rows 2: every question alone (the first has more options than that); 4: the last two together
    scores = score_options(model, tokenizer, prefix, questions, max_rows=2)
    grouped = score_options(model, tokenizer, prefix, questions, max_rows=4)
    assert [len(row) for row in grouped] == [3, 2, 1]
    assert sum(grouped, []) == pytest.approx(sum(scores, []), abs=1e-4)
    for (question, options), row in zip(questions, scores, strict=True):
        for option, score in zip(options, row, strict=True):
            prefix_ids, question_ids = encode_prompt(tokenizer, prefix, question)
            option_ids = tokenizer(option, add_special_tokens=False)["input_ids"]
            ids = prefix_ids + question_ids + option_ids
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
            start = len(prefix_ids) + len(question_ids)
            expected = sum(float(logprobs[start - 1 + j, t]) for j, t in enumerate(option_ids))
            assert score == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="non-empty"):
        score_options(model, tokenizer, prefix, [("", [" PER"])])
