"""Every bad input gives an error that names the problem and the fix."""

import json
from pathlib import Path

import pytest
import spacy
from conftest import fsner_config


def _add(config: dict) -> spacy.Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("fsner", config=config)
    return nlp


@pytest.mark.parametrize(
    "labels, definitions, message",
    [
        ([], {}, "`labels` is empty"),
        (["PER", "LOC", "PER"], {}, r"lists \['PER'\] more than once"),
        (["PER"], {"ORG": "a company"}, r"defines \['ORG'\], which are not in `labels`"),
        (["PER", " "], {}, "empty or non-string labels"),
    ],
)
def test_bad_labels(tiny_model_dir, labels, definitions, message):
    config = {**fsner_config(tiny_model_dir), "labels": labels, "label_definitions": definitions}
    with pytest.raises(ValueError, match=message):
        _add(config)


def test_model_set_to_none():
    with pytest.raises(ValueError, match="needs a `model`, e.g. model="):
        _add({"labels": ["PER"], "model": None})


def test_model_path_that_does_not_exist(tmp_path):
    config = fsner_config(tmp_path / "no-such-model")
    message = r"does not exist\. .*package index \(gemma3-270m, smollm2-135m-instruct; sentence encoders: all-minilm"
    with pytest.raises(FileNotFoundError, match=message):
        _add(config)


def test_directory_that_is_not_a_model(tmp_path):
    with pytest.raises(ValueError, match="holds no config.json"):
        _add(fsner_config(tmp_path))


def test_hub_id_without_network_or_cache_explains_what_to_do(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import: no retries
    nlp = _add(fsner_config(Path("meta-llama/Llama-3.1-8B"), dtype="bfloat16"))  # loading is lazy
    with pytest.raises(OSError, match="must already be in the local Hugging Face cache"):
        nlp("Angela Merkel visited Paris.")


def test_adapter_that_does_not_fit_the_base_model(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from spacy_fsner.models.tiny import TinyModelSpec, build_tiny_model, tokenizer_texts

    other = build_tiny_model(tmp_path / "other", tokenizer_texts(None), TinyModelSpec(hidden_size=48, num_heads=4))
    from transformers import AutoModelForCausalLM

    get_peft_model(
        AutoModelForCausalLM.from_pretrained(other), LoraConfig(r=2, target_modules=["q_proj"])
    ).save_pretrained(tmp_path / "adapter")
    nlp = _add(fsner_config(tiny_model_dir, adapter=str(tmp_path / "adapter")))
    with pytest.raises(ValueError, match="does not fit the base model .* Set `name` to the base model"):
        nlp("Angela Merkel visited Paris.")


def test_adapter_directory_without_adapter(tiny_model_dir, tmp_path):
    nlp = _add(fsner_config(tiny_model_dir, adapter=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="adapter_config.json missing"):
        nlp("Angela Merkel visited Paris.")


def test_prompt_longer_than_the_model_context(tiny_model_dir, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    for f in tiny_model_dir.iterdir():
        (small / f.name).write_bytes(f.read_bytes())
    config = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 128}))
    nlp = _add({**fsner_config(small), "max_chunk_tokens": 1000})
    with pytest.warns(UserWarning, match=r"'too_long'.*lower `max_chunk_tokens`"):  # reported, not an error
        doc = nlp(" ".join(["word"] * 300))
    assert [item["label"] for item in doc.user_data["fsner"]["too_long"]] == ["PER", "LOC"]


def test_bad_dtype_and_device(tiny_model_dir):
    with pytest.raises(ValueError, match="Unknown dtype 'fp8'"):
        _add(fsner_config(tiny_model_dir, dtype="fp8"))
    with pytest.raises(ValueError, match="no CUDA device is available"):
        _add(fsner_config(tiny_model_dir, device="cuda:0"))


def test_remote_code_is_off_unless_asked(tiny_model_dir):
    nlp = _add(fsner_config(tiny_model_dir))
    assert nlp.get_pipe("fsner").model.trust_remote_code is False


def test_bad_max_chunk_tokens(tiny_model_dir):
    with pytest.raises(ValueError, match="max_chunk_tokens must be >= 1"):
        _add({**fsner_config(tiny_model_dir), "max_chunk_tokens": 0})
