"""Settings every component of the package honours: a `scorer`, `exclude` when saving and loading, a report per
component name, one label setting for fsner, el4ner and `spacy_fsner.NER.v1`, and a configurable shared-input
template."""

import pytest
import spacy
from spacy.tokens import Span
from spacy.training import Example
from spacy.util import registry
from spacy_llm.registry import registry as llm_registry
from test_el4ner import LABELS, POOL, SENTENCE, A, pipeline

from spacy_fsner.pipeline.fsner import FewShotNER
from spacy_fsner.pipeline.task import label_setting, make_ner_task

SCRIPTED = "spacy_fsner.test.ScriptedLM.v1"


@registry.scorers("spacy_fsner.test.constant_scorer.v1")
def constant_scorer():
    def score(examples, **kwargs):
        return {"constant": 0.5, "labels": list(kwargs.get("labels", ()))}

    return score


def _fsner(nlp: spacy.Language, name: str = "fsner", answers: dict | None = None, **settings):
    config = {"labels": ["PER", "LOC"], "model": {"@llm_models": SCRIPTED, "answers": answers or {}}, **settings}
    config.setdefault("template", {"@misc": "spacy_fsner.CLLMFSTemplate.v1"})  # answers are per label
    return nlp.add_pipe("fsner", name=name, config=config)


def _example(nlp: spacy.Language) -> Example:
    gold = nlp.make_doc("Ann met Bob")
    gold.ents = [Span(gold, 0, 1, label="PER")]
    return Example(nlp(gold.text), gold)


# 1. scorer -----------------------------------------------------------------------------------------------------------
def test_the_scorer_setting_scores_both_components():
    constant = {"@scorers": "spacy_fsner.test.constant_scorer.v1"}
    nlp = spacy.blank("en")
    pipe = _fsner(nlp, scorer=constant)
    assert pipe.score([_example(nlp)]) == {"constant": 0.5, "labels": ["PER", "LOC"]}
    nlp, component = pipeline({"a": A}, scorer=constant)
    assert component.score([_example(nlp)])["constant"] == 0.5


def test_the_default_scorer_is_the_registered_one():
    nlp = spacy.blank("en")
    pipe = _fsner(nlp, answers={"PER|Ann met Bob": [["Ann", -1.0]]})
    assert nlp.get_pipe_config("fsner")["scorer"] == {"@scorers": "spacy_fsner.ner_scorer.v1"}
    assert pipe.score([_example(nlp)])["ents_f"] == 1.0
    nlp, _ = pipeline({"a": A})
    assert nlp.get_pipe_config("el4ner")["scorer"] == {"@scorers": "spacy_fsner.ner_scorer.v1"}


# 2. exclude ----------------------------------------------------------------------------------------------------------
class SavedModel:
    """A model that writes and reads a directory, and says when it did."""

    def __init__(self) -> None:
        self.loaded_from = None

    def __call__(self, prompts):
        raise AssertionError("not called")

    def to_disk(self, path):
        path.mkdir()
        (path / "weights").write_text("w")

    def from_disk(self, path):
        self.loaded_from = path


def _component(labels=("PER",)) -> FewShotNER:
    return FewShotNER(spacy.blank("en").vocab, make_ner_task(list(labels)), SavedModel())


def test_fsner_to_disk_and_bytes_leave_out_what_exclude_names(tmp_path):
    pipe = _component()
    pipe.to_disk(tmp_path / "all")
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["model", "task.msgpack"]
    pipe.to_disk(tmp_path / "no-model", exclude=["model"])
    assert [p.name for p in (tmp_path / "no-model").iterdir()] == ["task.msgpack"]
    pipe.to_disk(tmp_path / "no-task", exclude=["task"])
    assert [p.name for p in (tmp_path / "no-task").iterdir()] == ["model"]
    other = _component(["LOC"])
    other.from_disk(tmp_path / "all", exclude=["model"])
    assert other.labels == ("PER",) and other.model.loaded_from is None
    other = _component(["LOC"])
    other.from_disk(tmp_path / "all", exclude=["task"])
    assert other.labels == ("LOC",) and other.model.loaded_from == tmp_path / "all" / "model"
    other = _component(["LOC"]).from_bytes(pipe.to_bytes(exclude=["model"]))
    assert other.labels == ("PER",) and other.model.loaded_from is None


def test_fsner_task_fields_can_be_excluded():
    task = make_ner_task(["PER", "LOC"], {"PER": "a person"})
    doc = spacy.blank("en")("Ann met Bob")
    doc.ents = [Span(doc, 0, 1, label="PER")]
    task.set_demonstrations([doc])
    other = make_ner_task(["ORG"]).from_bytes(task.to_bytes(exclude=["examples"]))
    assert other.labels == ("PER", "LOC") and other.label_definitions == {"PER": "a person"}
    assert other.demonstrations == []
    other = make_ner_task(["ORG"]).from_bytes(task.to_bytes(), exclude=["labels"])
    assert other.labels == ("ORG",) and other.demonstrations == task.demonstrations


def test_el4ner_serialization_honours_exclude(tmp_path):
    nlp, component = pipeline({"a": A})
    assert component.retriever.pool
    nlp2, other = pipeline({"a": A})
    other.retriever.fit([])
    other.from_bytes(component.to_bytes(exclude=["retriever"]))
    assert not other.retriever.pool
    other.set_labels(["PER"])
    component.to_disk(tmp_path / "e", exclude=["labels"])
    other.from_disk(tmp_path / "e")
    assert other.labels == ("PER",) and len(other.retriever.pool) == len(POOL)
    component.to_disk(tmp_path / "nothing", exclude=["el4ner"])
    assert list((tmp_path / "nothing").iterdir()) == []
    nlp.to_disk(tmp_path / "pipeline")
    assert spacy.load(tmp_path / "pipeline").get_pipe("el4ner").retriever.pool == component.retriever.pool


# 3. the report of each component under its name ---------------------------------------------------------------------
def test_two_fsner_components_keep_their_reports_apart():
    text = "Ann met Bob"
    nlp = spacy.blank("en")
    _fsner(nlp, answers={f"PER|{text}": [["Carl", -1.0]]}, spans_key="a")
    _fsner(nlp, "places", answers={f"LOC|{text}": [["Rome", -1.0], ["Bob", -1.0], ["Bob", -1.0]]}, spans_key="b")
    with pytest.warns(UserWarning) as caught:
        doc = nlp(text)
    assert [r["text"] for r in doc.user_data["fsner"]["unplaced"]] == ["Carl"]
    assert [r["text"] for r in doc.user_data["places"]["unplaced"]] == ["Rome"]
    assert doc.user_data["fsner"]["repeated"] == [] and [r["text"] for r in doc.user_data["places"]["repeated"]] == [
        "Bob"
    ]
    assert "doc.user_data['places']" in str(caught[-1].message)
    assert nlp.get_pipe("fsner").stats["unplaced"] == nlp.get_pipe("places").stats["unplaced"] == 1


# 4. one label setting ------------------------------------------------------------------------------------------------
def test_label_setting_splits_checks_and_is_used_by_every_component():
    assert label_setting("PER, LOC,", {"PER": "a person"}) == (["PER", "LOC"], {"PER": "a person"})
    assert label_setting([], required=False) == ([], {})
    with pytest.raises(ValueError, match="`labels` is empty"):
        label_setting("")
    with pytest.raises(ValueError, match="more than once"):
        label_setting("PER,PER")
    nlp = spacy.blank("en")
    assert _fsner(nlp, labels="PER,LOC").labels == ("PER", "LOC")
    _, component = pipeline({"a": A}, labels="PER,LOC,ORG")
    assert component.labels == tuple(LABELS)
    with pytest.raises(ValueError, match="more than once"):
        pipeline({"a": A}, labels="PER,PER")


def test_the_ner_task_takes_comma_labels_and_starts_without_any():
    make = llm_registry.llm_tasks.get("spacy_fsner.NER.v1")
    assert make(labels="PER,LOC").labels == ("PER", "LOC")
    task = make()
    assert task.labels == ()
    with pytest.raises(ValueError, match="no labels"):
        list(task.generate_prompts([spacy.blank("en")("Ann met Bob")]))
    task.add_label("PER")
    assert task.labels == ("PER",)
    task = make()
    task.initialize(lambda: [Example(d.copy(), d) for d in POOL])
    assert task.labels == ("LOC", "ORG", "PER"), "the examples' entity types"
    task = make(labels=["PER"])
    task.initialize(lambda: [Example(d.copy(), d) for d in POOL], n_prompt_examples=1)
    assert task.labels == ("PER",) and [text for text, _ in task.demonstrations] == [POOL[0].text]
    task.initialize(lambda: [], labels=["LOC"])
    assert task.labels == ("LOC",)


def test_the_ner_task_in_spacy_llm_gets_its_labels_from_initialize():
    nlp = spacy.blank("en")
    model = {"@llm_models": SCRIPTED, "answers": {}}  # a scripted model has no type hints to validate
    llm = nlp.add_pipe(
        "llm", config={"task": {"@llm_tasks": "spacy_fsner.NER.v1"}, "model": model, "validate_types": False}
    )
    nlp.initialize(lambda: [Example(nlp.make_doc(d.text), d) for d in POOL])
    assert llm.task.labels == ("LOC", "ORG", "PER")
    assert list(nlp(SENTENCE).ents) == []


# 6. the shared-input template from a config -------------------------------------------------------------------------
def test_shared_input_template_settings_from_a_config():
    doc = spacy.blank("en")("Kohl was in Bonn .")
    doc.ents = [Span(doc, 0, 1, label="PER")]
    prompts = {}
    for empty_answers in (False, True):
        nlp = spacy.blank("en")
        template = {"@misc": "spacy_fsner.SharedInputTemplate.v1", "empty_answers": empty_answers, "response": "A:\n"}
        pipe = _fsner(nlp, template=template, save_io=True)
        assert pipe.task.template.empty_answers is empty_answers
        pipe.adapt([doc])
        prompts[empty_answers] = nlp("Ann met Bob").user_data["llm_io"]["fsner"]["prompt"][0]
    assert "Kohl was in Bonn .\n\nA:\nPER: <<< Kohl >>>\n\n" in prompts[False]
    assert "Kohl was in Bonn .\n\nA:\nPER: <<< Kohl >>>\nLOC:\n\n" in prompts[True]
