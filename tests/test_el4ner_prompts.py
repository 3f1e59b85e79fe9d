"""EL4NER's prompts are registered templates that write what the component wrote before they moved to prompts/:
`data/el4ner_prompts.json` holds the extraction prompts, the classification and validation prefixes and the
questions that the code of 1075d32 produced for this pipeline."""

import json
from pathlib import Path

import spacy
from spacy.util import registry
from spacy_llm.registry import registry as llm_registry
from test_el4ner import SENTENCE, ScriptedMember, member, pipeline

import spacy_fsner.prompts.el4ner  # noqa: F401  (registers the templates before the entry points are reinstalled)

EXPECTED = json.loads((Path(__file__).parent / "data" / "el4ner_prompts.json").read_text())


class RecordingMember(ScriptedMember):
    """Also keeps the prefixes of the scoring prompts."""

    def score(self, prefix, questions):
        self.prefixes = [*getattr(self, "prefixes", []), prefix]
        return super().score(prefix, questions)


if "spacy_fsner.test.RecordingMember.v1" not in llm_registry.llm_models.get_all():
    llm_registry.llm_models.register(
        "spacy_fsner.test.RecordingMember.v1",
        func=lambda spans, types, reject=None, confidence=0.0, margin=1.0: RecordingMember(
            spans, types, reject, confidence, margin
        ),
    )


def _recorded(**settings) -> RecordingMember:
    config = member(["Merkel", "Paris", "bank"], {"Merkel": "PER", "Paris": "LOC", "bank": "ORG"})
    nlp, component = pipeline(
        {"r": {**config, "@llm_models": "spacy_fsner.test.RecordingMember.v1"}},
        retriever={"@misc": "spacy_fsner.RandomRetriever.v1", "k": 3},
        label_definitions={"PER": "a person", "ORG": "an organisation"},
        **settings,
    )
    nlp(SENTENCE)
    return component.members["r"]


def test_the_prompts_are_those_of_the_code_before_the_split():
    recorded = _recorded()
    assert recorded.prompts == EXPECTED["extraction"]
    assert recorded.prefixes == [EXPECTED["classification"], EXPECTED["validation"]]
    assert recorded.questions == EXPECTED["questions"]


def test_the_templates_are_registered_and_configurable():
    classify = registry.misc.get("spacy_fsner.EL4NERClassifyTemplate.v1")
    validate = registry.misc.get("spacy_fsner.EL4NERValidateTemplate.v1")
    nlp, component = pipeline({"a": member([], {})})
    config = nlp.get_pipe_config("el4ner")
    assert config["classification_template"]["@misc"] == "spacy_fsner.EL4NERClassifyTemplate.v1"
    assert config["validation_template"]["yes"] == " Yes", "the defaults are the builders', in the config"
    assert component.classification_template == classify() and component.validation_template == validate()
    recorded = _recorded(
        classification_template={"@misc": "spacy_fsner.EL4NERClassifyTemplate.v1", "response": "### Kinds:\n"},
        validation_template={"@misc": "spacy_fsner.EL4NERValidateTemplate.v1", "yes": " Ja", "no": " Nein"},
    )
    classification, validation = recorded.prefixes
    assert classification == EXPECTED["classification"].replace("### Types:\n", "### Kinds:\n")
    assert "Paris is LOC? Ja\nParis is ORG? Nein\n" in validation


def test_a_blank_el4ner_has_the_default_templates():
    assert "classification_template" in spacy.blank("en").get_factory_meta("el4ner").default_config
