"""Varied joint-template training prompts (`[train.variety]`, the base adapter's training): label name styles, left-out
present labels, definitions and demonstrations some of the time; records stay exact (the completion lists the
entities of the listed types only, entity spans decode to them) and the default settings change nothing."""

from __future__ import annotations

import pytest
from test_sft_records import make_doc
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from spacy_fsner.decoding.encoding import encode_completion
from spacy_fsner.pipeline.task import make_ner_task
from spacy_fsner.prompts.templates import joint_template_v1
from spacy_fsner.training.settings import PromptVariety, TrainSettings
from spacy_fsner.training.sft_records import label_names, sft_records

LABELS = ["person-scholar", "person-other", "building-library", "building-other", "location-park"]
DEFINITIONS = {"person-scholar": "a scholar or scientist", "location-park": "a park or garden"}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def docs_and_task(template=None):
    docs = [
        make_doc("Einstein met Obama in the Bodleian Library .", [(0, 1, "person-scholar"), (2, 3, "person-other")]),
        make_doc("Curie walked through Hyde Park .", [(0, 1, "person-scholar"), (3, 5, "location-park")]),
        make_doc("The Empire State Building is tall .", [(1, 4, "building-other")]),
        make_doc("Darwin read in the British Library .", [(0, 1, "person-scholar"), (4, 6, "building-library")]),
        make_doc("Nothing here at all ."),
        make_doc("Lovelace wrote notes .", [(0, 1, "person-scholar")]),
    ]
    task = make_ner_task(LABELS, DEFINITIONS, template=template or joint_template_v1())
    return docs, task


def listed_types(tokenizer, record) -> list[str]:
    return tokenizer.decode(record["input_ids"]).split("Types: ")[1].split(".\n")[0].split(", ")


def answer(tokenizer, record) -> str:
    first = record["completion_mask"].index(1)
    return tokenizer.decode(record["input_ids"][first:])


def test_label_name_styles() -> None:
    labels = ["person-scholar", "person-other", "building-other", "building-library", "PER"]
    assert label_names(labels, "full") == {label: label for label in labels}
    assert label_names(labels, "coarse") == {
        "person-scholar": "person",
        "person-other": "person",
        "building-other": "building",
        "building-library": "building",
        "PER": "PER",
    }
    # "other" is the fine part of two labels: those keep their full names
    assert label_names(labels, "fine") == {
        "person-scholar": "scholar",
        "person-other": "person-other",
        "building-other": "building-other",
        "building-library": "library",
        "PER": "PER",
    }
    # a fine part that is another label's name keeps the full name
    assert label_names(["art-music", "music"], "fine") == {"art-music": "art-music", "music": "music"}
    with pytest.raises(ValueError, match="Unknown label name style"):
        label_names(labels, "upper")


def test_default_variety_changes_nothing(tokenizer) -> None:
    docs, task = docs_and_task()
    plain = sft_records(docs, task, tokenizer, absent_labels=2, seed=5)
    assert sft_records(docs, task, tokenizer, absent_labels=2, seed=5, variety=PromptVariety()) == plain
    assert all(
        "scholar or scientist" in tokenizer.decode(r["input_ids"])
        for r in plain
        if "person-scholar" in listed_types(tokenizer, r)
    )


def test_renamed_labels_in_prompt_and_answer(tokenizer) -> None:
    docs, task = docs_and_task()
    styles = set()
    for seed in range(6):
        records = sft_records(docs, task, tokenizer, absent_labels=-1, seed=seed, variety=PromptVariety(names=1.0))
        for doc, record in zip(docs, records, strict=True):
            listed = listed_types(tokenizer, record)
            coarse = set(listed) <= {"person", "building", "location"}
            fine = set(listed) <= {"scholar", "person-other", "library", "building-other", "park"}
            assert coarse or fine, listed
            styles.add("coarse" if coarse else "fine")
            names = label_names(LABELS, "coarse" if coarse else "fine")
            expected = task.template.completion([(e.text, names[e.label_]) for e in doc.ents])
            assert record["input_ids"][record["completion_mask"].index(1) :] == encode_completion(tokenizer, expected)
            assert {names[e.label_] for e in doc.ents} <= set(listed)
            # the merged coarse name has no definition; a renamed fine one keeps its label's
            prompt = tokenizer.decode(record["input_ids"])
            assert ("scholar: a scholar or scientist" in prompt) == ("scholar" in listed)
    assert styles == {"coarse", "fine"}


def test_left_out_present_labels_leave_their_entities_out(tokenizer) -> None:
    docs, task = docs_and_task()
    empty = 0
    for seed in range(5):
        records = sft_records(
            docs, task, tokenizer, absent_labels=0, seed=seed, variety=PromptVariety(omit_present=1.0)
        )
        for doc, record in zip(docs, records, strict=True):
            listed = listed_types(tokenizer, record)
            kept = [e for e in doc.ents if e.label_ in listed]
            if doc.ents:
                assert len(kept) < len(doc.ents) or len({e.label_ for e in doc.ents}) == 0
            expected = task.template.completion([(e.text, e.label_) for e in kept])
            assert answer(tokenizer, record) == tokenizer.decode(encode_completion(tokenizer, expected))
            spans = [tokenizer.decode(record["input_ids"][a:b]).strip() for a, b in record["entity_spans"]]
            assert spans == [e.text for e in kept]
            empty += not kept
    assert empty > 5  # a listed type without an entity in the sentence: the empty answer


def test_definitions_and_demonstrations_some_of_the_time(tokenizer) -> None:
    docs, task = docs_and_task()
    never = sft_records(docs, task, tokenizer, absent_labels=-1, variety=PromptVariety(definitions=0.0))
    assert not any("scholar or scientist" in tokenizer.decode(r["input_ids"]) for r in never)
    shown = sft_records(docs, task, tokenizer, absent_labels=-1, variety=PromptVariety(demonstrations=1.0, shots=2))
    texts = [doc.text for doc in docs]
    for doc, record in zip(docs, shown, strict=True):
        prompt = tokenizer.decode(record["input_ids"][: record["completion_mask"].index(1)])
        others = [text for text in texts if text != doc.text and text in prompt]
        assert 1 <= len(others) <= 2 and prompt.count(doc.text) == 1  # never its own sentence as a demonstration
    half = sft_records(docs * 10, task, tokenizer, absent_labels=-1, variety=PromptVariety(definitions=0.5))
    with_definitions = sum("park or garden" in tokenizer.decode(r["input_ids"]) for r in half)
    listing_park = sum("location-park" in listed_types(tokenizer, r) for r in half)
    assert 0 < with_definitions < listing_park


def test_variety_needs_the_joint_template_and_valid_settings(tokenizer) -> None:
    from spacy_fsner.prompts.templates import alpaca_template_v1

    docs, task = docs_and_task(alpaca_template_v1())
    with pytest.raises(ValueError, match="joint template only"):
        sft_records(docs, task, tokenizer, variety=PromptVariety(names=0.5))
    with pytest.raises(ValueError, match="names = 1.5: a probability"):
        PromptVariety(names=1.5)
    with pytest.raises(ValueError, match="shots = 0"):
        PromptVariety(shots=0)
    with pytest.raises(ValueError, match="apply to SFT records"):
        TrainSettings(stage="dpo", group_by_length=True)
    settings = TrainSettings.from_config({"group_by_length": True, "variety": {"names": 0.3}})
    assert settings.variety.names == 0.3
    assert settings.trainer_arguments()["train_sampling_strategy"] == "group_by_length"
    assert TrainSettings().trainer_arguments()["train_sampling_strategy"] == "random"
