"""No silent failures: each bad input of the issue "No silent failures, and results a user can look at" gives an
error naming the problem and the fix, or a warning; one test per row of its table."""

import codecs
from pathlib import Path

import pytest
from spacy.vocab import Vocab
from typer.testing import CliRunner

from spacy_fsner.cli import app
from spacy_fsner.data.readers import read_docs

CLLMFS = {"@misc": "spacy_fsner.CLLMFSTemplate.v1"}  # the scripted answers are per label


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def convert(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["convert", *map(str, args)])
    return result.exit_code, result.output


# --- 3: a token-tag line with 3 columns, unknown prefixes ------------------------------------------------------


def test_tagged_line_with_three_columns_names_the_line_and_the_layout(tmp_path):
    path = write(tmp_path, "t.txt", "Aspirin\tB-DRUG\ncures\tO\nflu\tI-DISEASE\textra\n")
    for scheme in ("auto", "io"):
        code, output = convert(path, tmp_path / "out.spacy", "--format", "tagged", "--scheme", scheme)
        assert code == 1
        assert "t.txt, line 3: 3 columns, expected 2 (token and tag)" in output
        assert "mixes" not in output


def test_io_scheme_never_makes_a_prefix_part_of_a_label(tmp_path):
    path = write(tmp_path, "t.txt", "Aspirin\tB-DRUG\ncures\tO\nflu\tI-DISEASE\n")
    code, output = convert(path, tmp_path / "out.spacy", "--scheme", "io")
    assert code == 1
    assert "line 1: tag 'B-DRUG' has a B- prefix, but scheme 'io' reads bare types" in output
    assert not (tmp_path / "out.spacy").exists()


@pytest.mark.parametrize("scheme", ["auto", "bio"])
def test_unknown_tag_prefix_is_named_not_read_as_io(tmp_path, scheme):
    path = write(tmp_path, "t.txt", "Aspirin\tB-DRUG\ncures\tO\nflu\tX-DISEASE\n")
    with pytest.raises(ValueError, match=r"t\.txt, line 3: tag 'X-DISEASE' has the unknown prefix X-") as error:
        read_docs(path, Vocab(), format="tagged", scheme=scheme)
    assert "scheme 'io'" not in str(error.value)


# --- 4: a UTF-8 byte order mark ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text, data_format",
    [
        ("t.txt", "Aspirin\tB-DRUG\ncures\tO\n", "tagged"),
        ("t.conll", "Aspirin NN B-NP B-DRUG\ncures VB B-VP O\n", "conll"),
        (
            "e.jsonl",
            '{"support": {"word": [["Aspirin"]], "label": [["drug"]]}, '
            '"query": {"word": [["Aspirin", "cures"]], "label": [["drug", "O"]]}, "types": ["drug"]}\n',
            "episodes",
        ),
    ],
)
@pytest.mark.parametrize("detect", [True, False])
def test_byte_order_mark_is_not_part_of_the_first_token(tmp_path, name, text, data_format, detect):
    path = write(tmp_path, name, codecs.BOM_UTF8 + text.encode())
    docs = read_docs(path, Vocab(), format="auto" if detect else data_format)
    assert docs[0][0].text == "Aspirin"
    assert docs[0].ents[0].text == "Aspirin"


# --- 6: files without sentences ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data_format, text",
    [("tagged", ""), ("conll", ""), ("conll", "-DOCSTART- -X- -X- O\n\n"), ("episodes", ""), ("tagged", "\n\n")],
)
def test_file_without_sentences_is_an_error(tmp_path, data_format, text):
    path = write(tmp_path, "empty.txt", text)
    code, output = convert(path, tmp_path / "out.spacy", "--format", data_format)
    assert code == 1
    assert "empty.txt has no sentences" in output
    assert not (tmp_path / "out.spacy").exists()


# --- 11: files that are not UTF-8, the CoNLL column count --------------------------------------------------------


@pytest.mark.parametrize("data_format", ["auto", "tagged", "conll", "episodes"])
def test_utf16_file_names_the_file_and_the_conversion(tmp_path, data_format):
    path = write(tmp_path, "u16.txt", "Aspirin\tB-DRUG\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"u16\.txt is not UTF-8 text \(UTF-16\?\): convert it with `iconv -f UTF-16"):
        read_docs(path, Vocab(), format=data_format)


def test_binary_file_names_the_file(tmp_path):
    path = write(tmp_path, "blob.bin", bytes(range(128, 256)) * 4)
    with pytest.raises(ValueError, match=r"blob\.bin is not UTF-8 text \(Latin-1 or binary\?\)"):
        read_docs(path, Vocab(), format="tagged")


def test_conll_column_count_error_names_an_option_that_exists(tmp_path):
    path = write(tmp_path, "de.conll", "EU NN B-NP O B-ORG\nbans VB B-VP O O\n")
    code, output = convert(path, tmp_path / "out.spacy", "--format", "conll")
    assert code == 1
    assert "expected 4 space-separated columns" in output and "`--columns` of convert" in output
    code, output = convert(path, tmp_path / "out.spacy", "--format", "conll", "--columns", "5")
    assert code == 0, output
    assert "wrote 1 docs with 1 entities" in output


# --- 5: labels with whitespace inside, max_steps 0 ----------------------------------------------------------------


@pytest.mark.parametrize("labels", ["PER LOC", ["PER LOC"], "PER LOC,ORG"])
def test_labels_with_whitespace_inside_say_how_to_list_them(labels):
    from spacy_fsner.pipeline.task import label_setting

    with pytest.raises(ValueError, match=r"labels with whitespace inside: .*\['PER', 'LOC'\].*'PER,LOC'"):
        label_setting(labels)


@pytest.mark.parametrize("max_steps", [0, -2])
def test_max_steps_zero_is_an_error(max_steps):
    from spacy_fsner.training.settings import TrainSettings

    with pytest.raises(ValueError, match=rf"max_steps = {max_steps}: use -1 to train for `epochs`, or .* >= 1"):
        TrainSettings.from_config({"max_steps": max_steps})
    assert TrainSettings.from_config({"max_steps": 1}).max_steps == 1


# --- 7: an adapter trained for another base model ----------------------------------------------------------------


def _adapter(base_dir, out):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(r=2, target_modules=["q_proj"])
    ).save_pretrained(out)
    return out


def _nlp(model_dir, **settings):
    import spacy
    from conftest import fsner_config

    nlp = spacy.blank("en")
    nlp.add_pipe("fsner", config=fsner_config(model_dir, **settings))
    return nlp


def test_adapter_for_a_base_model_at_another_path_warns(tiny_model_dir, tmp_path, fsner_log):
    import shutil

    adapter = _adapter(tiny_model_dir, tmp_path / "adapter")
    same_shape = shutil.copytree(tiny_model_dir, tmp_path / "other-base")
    _nlp(same_shape, adapter=str(adapter))("Angela Merkel visited Paris.")
    warnings = [r.getMessage() for r in fsner_log.records if r.levelname == "WARNING"]
    assert any(str(tiny_model_dir) in m and str(same_shape) in m and "was trained on" in m for m in warnings)


def test_adapter_for_the_same_base_model_spelled_otherwise_does_not_warn(tiny_model_dir, tmp_path, fsner_log):
    adapter = _adapter(tiny_model_dir, tmp_path / "adapter")
    spelled = tiny_model_dir.parent / ".." / tiny_model_dir.parent.name / tiny_model_dir.name
    _nlp(spelled, adapter=str(adapter))("Angela Merkel visited Paris.")
    assert not [r for r in fsner_log.records if "was trained on" in r.getMessage()]


# --- 11: a device that is not one ---------------------------------------------------------------------------------


def test_device_gpu_names_the_devices_there_are(tiny_model_dir):
    with pytest.raises(ValueError, match=r"device 'gpu' is not a device: use 'cuda', 'cuda:N' .*'cpu' or 'auto'"):
        _nlp(tiny_model_dir, device="gpu")


# --- 1 and 11: training labels without entities, corpora without docs ---------------------------------------------

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "obp.cfg"


def _corpus(tmp_path, docs):
    from spacy.tokens import DocBin

    path = tmp_path / "train.spacy"
    DocBin(docs=docs).to_disk(path)
    return path


def _gold(vocab, words, ents):
    from spacy.tokens import Doc, Span

    doc = Doc(vocab, words=words)
    doc.ents = [Span(doc, start, end, label) for start, end, label in ents]
    return doc


def _train(tmp_path, model_dir, corpus, **overrides):
    args = ["train", str(CONFIG), "--output", str(tmp_path / "out"), "--paths.base_model", str(model_dir)]
    args += ["--paths.train", str(corpus), "--train.max_steps", "1", "--train.threads", "1"]
    for key, value in overrides.items():
        args += [f"--{key}", value]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_training_labels_without_entities_in_the_corpus_name_both_label_sets(tmp_path, tiny_model_dir):
    vocab = Vocab()
    corpus = _corpus(tmp_path, [_gold(vocab, ["Aspirin", "cures", "flu"], [(0, 1, "DRUG"), (2, 3, "DISEASE")])])
    code, output = _train(tmp_path, tiny_model_dir, corpus, **{"components.fsner.labels": "PER,ORG"})
    assert code == 1
    assert "None of the labels ['PER', 'ORG'] has an entity" in output and "['DISEASE', 'DRUG']" in output
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_training_corpus_without_entities_is_an_error(tmp_path, tiny_model_dir):
    corpus = _corpus(tmp_path, [_gold(Vocab(), ["Aspirin", "cures", "flu"], [])])
    code, output = _train(tmp_path, tiny_model_dir, corpus)
    assert code == 1
    assert "has 1 docs but no entities" in output


def test_training_labels_partly_without_entities_warn(tmp_path, tiny_model_dir, fsner_log):
    from spacy_fsner.training.run import check_label_coverage

    check_label_coverage(("DRUG", "PER"), ["DISEASE", "DRUG"], "train.spacy")
    assert "The labels ['PER'] have no entity in the training corpus train.spacy" in fsner_log.text


def test_empty_docbin_says_the_corpus_has_no_docs(tmp_path, tiny_model_dir):
    corpus = _corpus(tmp_path, [])
    code, output = _train(tmp_path, tiny_model_dir, corpus)
    assert code == 1
    assert f"The corpus {corpus} has no docs" in output and "`labels` is empty" not in output


# --- 11: adapt() with strings --------------------------------------------------------------------------------------


def test_adapt_with_strings_says_it_takes_docs(tiny_model_dir):
    nlp = _nlp(tiny_model_dir)
    with pytest.raises(TypeError, match=r"adapt takes spaCy Docs with gold entities .*nlp\.make_doc.*reference"):
        nlp.get_pipe("fsner").adapt(["Angela Merkel visited Paris."], labels=["PER"])


# --- 8: the CLI prints `error: ...`, not a traceback -----------------------------------------------------------------


def test_train_with_a_hub_model_offline_prints_one_error_line(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    vocab = Vocab()
    corpus = _corpus(tmp_path, [_gold(vocab, ["Angela", "Merkel", "spoke"], [(0, 2, "PER")])])
    code, output = _train(tmp_path, "meta-llama/Llama-3.1-8B", corpus)
    assert code == 1
    assert output.startswith("error: Could not load 'meta-llama/Llama-3.1-8B'")
    assert "Traceback" not in output and len(output.splitlines()) <= 3


def test_train_continuing_an_adapter_of_another_shape_prints_one_error_line(tmp_path, tiny_model_dir):
    from spacy_fsner.models.tiny import TinyModelSpec, build_tiny_model, tokenizer_texts

    other = build_tiny_model(tmp_path / "other", tokenizer_texts(None), TinyModelSpec(hidden_size=48, num_heads=4))
    adapter = _adapter(other, tmp_path / "adapter")
    corpus = _corpus(tmp_path, [_gold(Vocab(), ["Angela", "Merkel", "spoke"], [(0, 2, "PER")])])
    code, output = _train(tmp_path, tiny_model_dir, corpus, **{"paths.adapter": str(adapter)})
    assert code == 1
    assert f"error: The LoRA adapter at '{adapter}' does not fit the base model" in output
    assert "Traceback" not in output and output.count("size mismatch") <= 1


@pytest.mark.parametrize("content", ["not json at all", "[1, 2]", '{"results": {}}'])
def test_compare_on_a_file_that_is_not_a_results_file_prints_one_error_line(tmp_path, content):
    path = write(tmp_path, "notes.json", content)
    result = CliRunner().invoke(app, ["compare", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "notes" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- 2: evaluate with a pipeline whose labels are not the gold data's ------------------------------------------------


def _scripted(labels):
    import spacy

    nlp = spacy.blank("en")
    model = {"@llm_models": "spacy_fsner.test.ScriptedLM.v1", "answers": {}}
    nlp.add_pipe("fsner", config={"labels": labels, "model": model, "template": CLLMFS})
    return nlp


@pytest.mark.parametrize(
    "labels, warned", [(["PER", "LOC"], "none of them in common"), (["DRUG", "PER"], "only ['DRUG'] in common")]
)
def test_evaluate_with_labels_that_differ_from_the_gold_types_warns(tmp_path, fsner_log, labels, warned):
    from spacy_fsner.evaluation.protocols import evaluate

    gold = _gold(Vocab(), ["Aspirin", "cures", "flu"], [(0, 1, "DRUG"), (2, 3, "DISEASE")])
    evaluate(_scripted(labels), _corpus(tmp_path, [gold]), resamples=0)
    warnings = [r.getMessage() for r in fsner_log.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert f"The pipeline's labels {sorted(labels)} differ from the entity types" in warnings[0]
    assert "['DISEASE', 'DRUG']" in warnings[0] and warned in warnings[0]


def test_evaluate_with_the_gold_types_does_not_warn(tmp_path, fsner_log):
    from spacy_fsner.evaluation.protocols import evaluate

    gold = _gold(Vocab(), ["Aspirin", "cures", "flu"], [(0, 1, "DRUG"), (2, 3, "DISEASE")])
    evaluate(_scripted(["DISEASE", "DRUG"]), _corpus(tmp_path, [gold]), resamples=0)
    assert not [r for r in fsner_log.records if r.levelname == "WARNING"]


# --- 13: the CLI help names the shipped configs and the models it fetches -------------------------------------------


def test_train_help_lists_the_shipped_training_configs():
    result = CliRunner().invoke(app, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "Training config (pipeline + [train])" in result.output
    shipped = sorted(p.name for p in CONFIG.parent.glob("*.cfg") if "[train]" in p.read_text().splitlines())
    assert len(shipped) >= 4
    for name in shipped:
        assert f"configs/{name}: " in result.output


def test_fetch_model_help_lists_every_name_it_accepts():
    from spacy_fsner.models.fetch import SOURCES

    result = CliRunner().invoke(app, ["fetch-model", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert all(name in result.output for name in SOURCES)


# --- 12: noise a user cannot act on ---------------------------------------------------------------------------------


def test_losses_of_many_docs_are_one_warning_per_pipe_call():
    import warnings

    import spacy

    texts = [f"Ann met Bob {i}" for i in range(5)]
    nlp = spacy.blank("en")
    answers = {f"PER|{text}": [["Carl", -1.0]] for text in texts[:3]}
    nlp.add_pipe(
        "fsner",
        config={
            "labels": ["PER"],
            "model": {"@llm_models": "spacy_fsner.test.ScriptedLM.v1", "answers": answers},
            "template": CLLMFS,
        },
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        docs = list(nlp.pipe(texts, batch_size=2))
    messages = [str(w.message) for w in caught if "fsner:" in str(w.message)]
    assert len(messages) == 1, messages
    assert "{'unplaced': 3} in 3 docs (the first, starting 'Ann met Bob 0'" in messages[0]
    assert [len(doc.user_data["fsner"]["unplaced"]) for doc in docs] == [1, 1, 1, 0, 0]


def test_decoding_raises_no_deprecation_warning_about_the_cache_argument(tiny_model_dir):
    import warnings

    nlp = _nlp(tiny_model_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nlp("Angela Merkel visited Paris.")
    assert not [w for w in caught if "past_key_values" in str(w.message)]


# --- 9: a token longer than the model's positions -------------------------------------------------------------------


def test_a_token_too_long_for_the_model_is_reported_and_the_batch_goes_on(tiny_model_dir, caplog):
    import logging
    import warnings

    nlp = _nlp(tiny_model_dir)
    texts = ["Angela Merkel visited Paris.", "x" * 5000, "Bob lives in Rome."]
    transformers_logger = logging.getLogger("transformers")  # it does not propagate: listen to it directly
    transformers_logger.addHandler(caplog.handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            docs = list(nlp.pipe(texts, batch_size=8))
    finally:
        transformers_logger.removeHandler(caplog.handler)
    assert [doc.text for doc in docs] == texts
    report = docs[1].user_data["fsner"]
    assert [item["label"] for item in report["too_long"]] == ["PER", "LOC"] and report["unfinished"] == []
    assert list(docs[1].ents) == []
    assert docs[0].user_data["fsner"]["too_long"] == docs[2].user_data["fsner"]["too_long"] == []
    messages = [str(w.message) for w in caught if "fsner:" in str(w.message)]
    assert len(messages) == 1 and "'too_long': 2" in messages[0] and "single very long token" in messages[0]
    assert "sequence length is longer than the specified maximum" not in caplog.text


# --- 10: a saved pipeline whose base model moved -------------------------------------------------------------------


def test_saved_pipeline_whose_model_moved_says_how_to_point_it_at_the_new_place(tiny_model_dir, tmp_path, fsner_log):
    import shutil

    import spacy

    old = shutil.copytree(tiny_model_dir, tmp_path / "old-place")
    _nlp(old).to_disk(tmp_path / "pipeline")
    assert f"names its base model by the local path '{old}', which does not travel" in fsner_log.text
    new = old.rename(tmp_path / "new-place")
    with pytest.raises(FileNotFoundError, match=r"If the model moved, .*'components\.fsner\.model\.name'") as error:
        spacy.load(tmp_path / "pipeline")
    assert "tiny-model" not in str(error.value)
    nlp = spacy.load(tmp_path / "pipeline", config={"components.fsner.model.name": str(new)})
    assert nlp.get_pipe("fsner").model.name == str(new)
    doc = nlp("Angela Merkel visited Paris.")
    assert "fsner" in doc.user_data


def test_fetch_names_and_hub_ids_travel_local_paths_do_not(tmp_path):
    from spacy_fsner.models.loading import travels

    assert travels("smollm2-135m-instruct") and travels("meta-llama/Llama-3.1-8B")
    assert not travels(str(tmp_path)) and not travels("./models/tiny")
