"""The fsner component: Doc.ents, scored candidates, chunking, serialization, scoring, spacy-llm."""

import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from conftest import fsner_config
from spacy.tokens import DocBin, Span
from spacy.training import Example

TEXTS = [
    "Angela Merkel visited Paris.",
    "EU rejects German call to boycott British lamb .",
    "São Paulo 😀 is big, said José.",
    "Line one\twith a tab and a bell \u0007 here.",
]


def _scripted(answers: dict, **settings) -> spacy.Language:
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "fsner",
        config={
            "labels": ["PER", "LOC"],
            "model": {"@llm_models": "spacy_fsner.test.ScriptedLM.v1", "answers": answers},
            "template": {"@misc": "spacy_fsner.CLLMFSTemplate.v1"},  # answers are per label
            **settings,
        },
    )
    return nlp


@pytest.fixture(scope="module")
def nlp(tiny_model_dir: Path) -> spacy.Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("fsner", config={**fsner_config(tiny_model_dir), "save_io": True})
    return nlp


def _predictions(docs) -> list:
    """Entities, candidates and candidate scores (to 4 decimals: batch shapes change float rounding)."""
    out = []
    for doc in docs:
        group = doc.spans["fsner"]
        out.append(
            (
                [(e.start_char, e.end_char, e.label_) for e in doc.ents],
                [(s.start, s.end, s.label_) for s in group],
                [round(x, 4) for x in group.attrs["scores"]],
            )
        )
    return out


def test_ents_are_token_aligned_and_every_candidate_has_a_score(nlp):
    docs = list(nlp.pipe(TEXTS))
    assert any(d.spans["fsner"] for d in docs)
    for doc in docs:
        group = doc.spans["fsner"]
        assert len(group.attrs["scores"]) == len(group)
        assert all(score <= 0 for score in group.attrs["scores"])
        covered = [i for e in doc.ents for i in range(e.start, e.end)]
        assert len(covered) == len(set(covered)), "doc.ents must not overlap"
        assert set((e.start, e.end, e.label_) for e in doc.ents) <= set((s.start, s.end, s.label_) for s in group)
        io = doc.user_data["llm_io"]["fsner"]
        assert len(io["prompt"]) == len(io["response"]) == 2  # one sentence x two labels
        assert "a specific person's name" in io["prompt"][0] and doc.text in io["prompt"][0]


def test_pipe_and_call_agree(nlp):
    assert _predictions(nlp.pipe(TEXTS, batch_size=3)) == _predictions([nlp(t) for t in TEXTS])


def test_disk_and_bytes_round_trips_give_identical_predictions(nlp, tmp_path):
    expected = _predictions(nlp.pipe(TEXTS))
    nlp.to_disk(tmp_path / "pipeline")
    assert _predictions(spacy.load(tmp_path / "pipeline").pipe(TEXTS)) == expected
    restored = spacy.blank("en")
    restored.add_pipe("fsner", config=fsner_config(Path(nlp.config["components"]["fsner"]["model"]["name"])))
    restored.from_bytes(nlp.to_bytes())
    assert _predictions(restored.pipe(TEXTS)) == expected


def _save_lora_adapter(model_dir: Path, path: Path) -> None:
    """A random (not zero) LoRA adapter for the model at `model_dir`, saved at `path`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(path)


def test_round_trip_keeps_the_lora_adapter(tiny_model_dir, tmp_path):
    _save_lora_adapter(tiny_model_dir, tmp_path / "adapter")
    nlp = spacy.blank("en")
    nlp.add_pipe("fsner", config=fsner_config(tiny_model_dir, adapter=str(tmp_path / "adapter")))
    expected = _predictions(nlp.pipe(TEXTS))
    nlp.to_disk(tmp_path / "pipeline")
    (tmp_path / "adapter" / "adapter_model.safetensors").unlink()  # the pipeline must carry its own copy
    assert (tmp_path / "pipeline" / "fsner" / "model" / "adapter" / "adapter_model.safetensors").is_file()
    assert _predictions(spacy.load(tmp_path / "pipeline").pipe(TEXTS)) == expected


def test_conflicts_across_labels_are_resolved_by_score():
    text = "Jordan played in Jordan"
    nlp = _scripted(
        {f"PER|{text}": [["Jordan", -1.0], ["Jordan", -5.0]], f"LOC|{text}": [["Jordan", -2.0], ["Jordan", -0.5]]}
    )
    doc = nlp(text)
    assert [(e.start, e.label_) for e in doc.ents] == [(0, "PER"), (3, "LOC")]
    assert len(doc.spans["fsner"]) == 4
    assert sorted(doc.spans["fsner"].attrs["scores"]) == [-5.0, -2.0, -1.0, -0.5]


@pytest.mark.parametrize("overwrite, expected", [(False, [(0, 2, "ORG")]), (True, [(0, 1, "PER")])])
def test_existing_ents_are_kept_or_overwritten(overwrite, expected):
    text = "Jordan Inc rules"
    nlp = _scripted({f"PER|{text}": [["Jordan", -1.0]]}, overwrite_ents=overwrite)
    doc = nlp.make_doc(text)
    doc.ents = [Span(doc, 0, 2, label="ORG")]
    doc = nlp.get_pipe("fsner")(doc)
    assert [(e.start, e.end, e.label_) for e in doc.ents] == expected
    assert [(s.start, s.label_) for s in doc.spans["fsner"]] == [(0, "PER")]


def test_unplaceable_strings_are_counted_not_dropped_silently():
    text = "Ann met Bob"
    nlp = _scripted({f"PER|{text}": [["Ann", -1.0], ["Carl", -1.0], ["Ann", -1.0]]})
    with pytest.warns(UserWarning, match="unplaced") as caught:
        doc = nlp(text)
    message = str(caught[0].message)
    assert "'repeated': the model wrote an entity it had already written" in message
    assert "max_new_tokens" not in message, "no hint about a loss that did not happen"
    report = doc.user_data["fsner"]
    assert [r["text"] for r in report["unplaced"]] == ["Carl"]
    assert [r["text"] for r in report["repeated"]] == ["Ann"]
    assert nlp.get_pipe("fsner").stats["unplaced"] == 1


def test_empty_and_whitespace_docs_get_no_prompts_and_no_entities(nlp):
    for text in ["", "   \n\t "]:
        doc = nlp(text)
        assert list(doc.ents) == [] and len(doc.spans["fsner"]) == 0
        assert doc.user_data["llm_io"]["fsner"] == {"prompt": [], "response": []}


def test_long_document_is_chunked_without_truncation(tiny_model_dir):
    from spacy_fsner.pipeline.chunking import chunk_doc

    nlp = spacy.blank("en")
    nlp.add_pipe(
        "fsner",
        config={
            **fsner_config(tiny_model_dir, max_new_tokens=3),
            "labels": ["PER"],
            "label_definitions": {},
            "max_chunk_tokens": 100,
        },
    )
    text = " ".join(f"Word{i % 50} and Maria went to Lyon ." for i in range(1000))
    doc = nlp.make_doc(text)
    assert len(doc) == 7000
    chunks = chunk_doc(doc, 100)
    assert [i for c in chunks for i in range(c.start, c.end)] == list(range(len(doc)))  # every token, once
    assert max(len(c) for c in chunks) <= 100
    doc = nlp(text)
    assert len(doc.user_data["fsner"]["unfinished"]) <= len(chunks)
    assert all(e.end <= len(doc) for e in doc.ents)


def test_sentences_are_the_chunks_when_set(tiny_model_dir):
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("fsner", config={**fsner_config(tiny_model_dir), "save_io": True})
    doc = nlp("Angela Merkel visited Paris. She liked it. Then she left.")
    prompts = doc.user_data["llm_io"]["fsner"]["prompt"]
    assert len(prompts) == 3 * 2
    assert "She liked it.\n" in prompts[2]


def test_score_and_spacy_evaluate_cli(nlp, tmp_path):
    docs = list(nlp.pipe(TEXTS[:2]))
    gold = nlp.make_doc(TEXTS[0])
    gold.ents = [Span(gold, 0, 2, label="PER"), Span(gold, 3, 4, label="LOC")]
    scores = nlp.get_pipe("fsner").score([Example(docs[0], gold)])
    assert {"ents_p", "ents_r", "ents_f", "ents_per_type"} <= set(scores)
    nlp.to_disk(tmp_path / "pipeline")
    DocBin(docs=[gold]).to_disk(tmp_path / "gold.spacy")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "spacy",
            "evaluate",
            str(tmp_path / "pipeline"),
            str(tmp_path / "gold.spacy"),
            "--output",
            str(tmp_path / "m.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ents_f" in (tmp_path / "m.json").read_text()


def test_same_task_and_model_run_in_spacy_llm_llm_component(nlp, tiny_model_dir):
    llm = spacy.blank("en")
    config = fsner_config(tiny_model_dir)
    llm.add_pipe(
        "llm",
        config={
            "task": {
                "@llm_tasks": "spacy_fsner.NER.v1",
                "labels": config["labels"],
                "label_definitions": config["label_definitions"],
            },
            "model": config["model"],
            "save_io": True,
        },
    )
    docs = list(llm.pipe(TEXTS))
    assert _predictions(docs) == _predictions(nlp.pipe(TEXTS))
    io = docs[0].user_data["llm_io"]["llm"]
    assert "Angela Merkel visited Paris." in io["prompt"] and "<<<" in io["response"]


def test_shared_input_template_with_demonstrations_round_trips(tiny_model_dir, tmp_path):
    """The shared-input template through the component: demonstrations are saved with the pipeline, and the
    loaded pipeline builds the same prompts and predictions."""
    nlp = spacy.blank("en")
    config = {**fsner_config(tiny_model_dir), "template": {"@misc": "spacy_fsner.SharedInputTemplate.v1"}}
    pipe = nlp.add_pipe("fsner", config={**config, "save_io": True})
    demo = nlp.make_doc("Kohl was in Bonn .")
    demo.ents = [Span(demo, 0, 1, "PER"), Span(demo, 3, 4, "LOC")]
    pipe.adapt([demo])
    docs = list(nlp.pipe(TEXTS))
    prompts = docs[0].user_data["llm_io"]["fsner"]["prompt"]
    assert len(prompts) == 2 and prompts[0].endswith("PER:") and prompts[1].endswith("LOC:")
    assert "Kohl was in Bonn .\n\n### Entities:\nPER: <<< Kohl >>>\nLOC: <<< Bonn >>>\n" in prompts[0]
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("fsner").task.demonstrations == pipe.task.demonstrations
    assert _predictions(loaded.pipe(TEXTS)) == _predictions(docs)


def test_demonstrations_saved_per_label_by_an_earlier_version_still_load(tiny_model_dir):
    import srsly

    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("fsner", config=fsner_config(tiny_model_dir))
    old = {
        "labels": ["PER", "LOC"],
        "label_definitions": {},
        "demonstrations": {"PER": [["Kohl was in Bonn .", ["Kohl"]]], "LOC": [["Kohl was in Bonn .", ["Bonn"]]]},
    }
    pipe.task.from_bytes(srsly.msgpack_dumps(old))
    assert pipe.task.demonstrations == [("Kohl was in Bonn .", {"PER": ["Kohl"], "LOC": ["Bonn"]})]


def test_batch_sizes_default_by_device_and_settings_win(monkeypatch):
    """Left out (null), batch_size and batch_tokens follow the device: small on a CPU, large on a GPU, where a
    decode step of many rows costs about what one of few does. Set, they are kept as they are."""
    import torch

    from spacy_fsner.models import causal_lm

    def batches(lm: causal_lm.CausalLM) -> dict:
        return {"batch_size": lm.config.batch_size, "batch_tokens": lm.config.batch_tokens}

    cpu = causal_lm.causal_lm_v1("smollm2-135m-instruct", device="cpu")
    assert batches(cpu) == causal_lm.BATCH_DEFAULTS["cpu"]
    monkeypatch.setattr(causal_lm, "resolve_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(causal_lm, "resolve_dtype", lambda dtype, device: torch.bfloat16)
    gpu = causal_lm.causal_lm_v1("smollm2-135m-instruct", device="cuda")
    assert batches(gpu) == causal_lm.BATCH_DEFAULTS["cuda"]
    assert gpu.config.batch_size > cpu.config.batch_size
    chosen = causal_lm.causal_lm_v1("smollm2-135m-instruct", device="cuda", batch_size=7, batch_tokens=99)
    assert batches(chosen) == {"batch_size": 7, "batch_tokens": 99}


def test_saving_a_pipeline_that_never_ran_does_not_load_the_model(tiny_model_dir, tmp_path, monkeypatch):
    """spaCy's convention: `to_disk` before any call writes the tokenizer and a copy of the configured adapter
    without loading the base model; the saved pipeline predicts what one that ran does, and saves over itself."""
    from spacy_fsner.models import causal_lm

    _save_lora_adapter(tiny_model_dir, tmp_path / "adapter")
    nlp = spacy.blank("en")
    nlp.add_pipe("fsner", config=fsner_config(tiny_model_dir, adapter=str(tmp_path / "adapter")))

    def no_loading(*args, **kwargs):
        raise AssertionError("the base model was loaded")

    with monkeypatch.context() as patched:
        patched.setattr(causal_lm, "load_base_model", no_loading)
        nlp.to_disk(tmp_path / "pipeline")
        saved = tmp_path / "pipeline" / "fsner" / "model"
        assert (saved / "adapter" / "adapter_model.safetensors").is_file()
        assert (saved / "tokenizer" / "tokenizer.json").is_file()
        reloaded = spacy.load(tmp_path / "pipeline")
        reloaded.to_disk(tmp_path / "pipeline")  # from where it was loaded: nothing lost, still nothing loaded
        assert nlp.get_pipe("fsner").model._loaded_model is None
    expected = _predictions(nlp.pipe(TEXTS))
    assert any(e for e, _, _ in expected), "the tiny model should find some entities"
    (tmp_path / "adapter" / "adapter_model.safetensors").unlink()  # the pipeline must carry its own copy
    assert _predictions(spacy.load(tmp_path / "pipeline").pipe(TEXTS)) == expected


def test_model_to_disk_and_from_disk_honour_exclude(tiny_model_dir, tmp_path):
    from spacy_fsner.models.causal_lm import causal_lm_v1

    _save_lora_adapter(tiny_model_dir, tmp_path / "adapter")
    lm = causal_lm_v1(str(tiny_model_dir), adapter=str(tmp_path / "adapter"))
    lm.to_disk(tmp_path / "model", exclude=["adapter"])
    assert (tmp_path / "model" / "tokenizer").is_dir() and not (tmp_path / "model" / "adapter").exists()
    lm.from_disk(tmp_path / "model", exclude=["adapter"])
    assert lm.adapter == str(tmp_path / "adapter") and lm.tokenizer_source == str(tmp_path / "model" / "tokenizer")
    lm.to_disk(tmp_path / "other", exclude=("tokenizer",))
    assert (tmp_path / "other" / "adapter").is_dir() and not (tmp_path / "other" / "tokenizer").exists()
    fresh = causal_lm_v1(str(tiny_model_dir))
    fresh.from_disk(tmp_path / "other", exclude=("tokenizer",))
    assert fresh.tokenizer_source is None and fresh.adapter == str(tmp_path / "other" / "adapter")
