"""Episode adaptation strategies: in-context demonstrations (default) and per-episode LoRA fine-tuning."""

from pathlib import Path

import pytest
import spacy
import torch
from conftest import fsner_config
from safetensors.torch import load_file
from spacy.tokens import Doc, Span

from spacy_fsner.data.readers import Episode
from spacy_fsner.evaluation.protocols import evaluate_episodes
from spacy_fsner.pipeline.adaptation import InContextAdaptation
from spacy_fsner.training.adaptation import EPISODE_ADAPTER, FineTuneAdaptation

torch.set_num_threads(1)

FINE_TUNE = {"@misc": "spacy_fsner.FineTuneAdaptation.v1", "steps": 3, "learning_rate": 1e-2, "batch_size": 2}
LABELS = ["PER", "LOC"]


def _nlp(model_dir: Path, adaptation: dict | None = FINE_TUNE, **model_settings) -> spacy.Language:
    nlp = spacy.blank("en")
    config = fsner_config(model_dir, **model_settings)
    if adaptation is not None:
        config["adaptation"] = adaptation
    nlp.add_pipe("fsner", config=config)
    return nlp


def _doc(nlp: spacy.Language, text: str, ents: list[tuple[int, int, str]]) -> Doc:
    doc = Doc(nlp.vocab, words=text.split())
    doc.ents = [Span(doc, start, end, label=label) for start, end, label in ents]
    return doc


def _episode_a(nlp) -> list[Doc]:
    return [
        _doc(nlp, "Angela Merkel visited Paris .", [(0, 2, "PER"), (3, 4, "LOC")]),
        _doc(nlp, "John lives in Rome .", [(0, 1, "PER"), (3, 4, "LOC")]),
    ]


def _episode_b(nlp) -> list[Doc]:
    return [
        _doc(nlp, "Mary flew to Madrid yesterday .", [(0, 1, "PER"), (3, 4, "LOC")]),
        _doc(nlp, "The talks in Berlin ended .", [(3, 4, "LOC")]),
        _doc(nlp, "Pedro Sanchez spoke .", [(0, 2, "PER")]),
    ]


def _queries(nlp) -> list[Doc]:
    return [Doc(nlp.vocab, words=t.split()) for t in ("Obama met Putin in Geneva .", "Lisbon is sunny .")]


def _logprobs(nlp) -> list[list[float]]:
    """The generator's token log-probabilities for every prompt of the query docs (sensitive to every weight)."""
    pipe = nlp.get_pipe("fsner")
    requests = [r for prompts in pipe.task.generate_prompts(_queries(nlp)) for r in prompts.requests]
    return [g.token_logprobs for g in pipe.model.generator.generate(requests)]


def _weights(model, adapter: str | None = None) -> dict[str, torch.Tensor]:
    """Copies of the LoRA weights of `adapter`, or of every weight outside LoRA with None."""
    state = model.state_dict()
    if adapter is None:
        return {k: v.clone() for k, v in state.items() if "lora_" not in k}
    return {k: v.clone() for k, v in state.items() if f".{adapter}." in k}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _base_weights(nlp) -> dict[str, torch.Tensor]:
    """The base model's weights under their plain names (with or without LoRA layers injected)."""
    model = nlp.get_pipe("fsner").model.loaded_model
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {k.replace(".base_layer", ""): v.clone() for k, v in model.state_dict().items() if "lora_" not in k}


def test_registered_names_resolve_from_a_config_and_travel_with_the_pipeline(tiny_model_dir, tmp_path):
    default = _nlp(tiny_model_dir, adaptation=None)
    assert isinstance(default.get_pipe("fsner").adaptation, InContextAdaptation)
    nlp = _nlp(tiny_model_dir, {"@misc": "spacy_fsner.FineTuneAdaptation.v1", "steps": 3, "r": 4, "seed": 7})
    adaptation = nlp.get_pipe("fsner").adaptation
    assert isinstance(adaptation, FineTuneAdaptation)
    assert (adaptation.steps, adaptation.lora.r, adaptation.lora.alpha, adaptation.seed) == (3, 4, 16, 7)
    assert (adaptation.learning_rate, adaptation.batch_size, adaptation.absent_labels) == (3e-4, 4, 1)
    assert adaptation.objectives == [] and adaptation.demonstrations is False
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline").get_pipe("fsner").adaptation
    assert isinstance(loaded, FineTuneAdaptation) and (loaded.steps, loaded.lora.r, loaded.seed) == (3, 4, 7)
    # a saved in-context pipeline evaluated by fine-tuning: a config override at load time
    default.to_disk(tmp_path / "default")
    override = {"components.fsner.adaptation": {"@misc": "spacy_fsner.FineTuneAdaptation.v1", "steps": 5}}
    assert spacy.load(tmp_path / "default", config=override).get_pipe("fsner").adaptation.steps == 5
    with pytest.raises(ValueError, match="steps >= 1"):
        _nlp(tiny_model_dir, {"@misc": "spacy_fsner.FineTuneAdaptation.v1", "steps": 0})


def test_fine_tuning_trains_an_episode_adapter_that_prediction_uses(tiny_model_dir, tmp_path):
    nlp = _nlp(tiny_model_dir)
    pipe = nlp.get_pipe("fsner")
    loaded = pipe.model.generator.model
    pipe.task.set_labels(LABELS)
    before, base = _logprobs(nlp), _base_weights(nlp)

    pipe.adapt(_episode_a(nlp), labels=LABELS)
    tuned = pipe.model.generator.model
    assert tuned is not loaded and tuned.active_adapter == EPISODE_ADAPTER and not tuned.training
    lora_b = {k: v for k, v in _weights(tuned, EPISODE_ADAPTER).items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values()), "a new LoRA starts at B = 0; it trained"
    losses = [entry["loss"] for entry in pipe.adaptation.log_history if "loss" in entry]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert pipe.task.demonstrations == [], "demonstrations = false: prompts without them"
    after = _logprobs(nlp)
    assert after != before, "prediction uses the tuned adapter"
    assert _same(_base_weights(nlp), base)

    # the same adapter saved and configured gives the same generations: nothing else changed
    tuned.save_pretrained(tmp_path / "saved", selected_adapters=[EPISODE_ADAPTER])
    again = _nlp(tiny_model_dir, adaptation=None, adapter=str(tmp_path / "saved" / EPISODE_ADAPTER))
    again.get_pipe("fsner").task.set_labels(LABELS)
    for x, y in zip(_logprobs(again), after, strict=True):
        assert x == pytest.approx(y, abs=1e-5)

    pipe.model.restore_model()
    assert pipe.model.generator.model is loaded and not any("lora_" in k for k in loaded.state_dict())
    assert _logprobs(nlp) == before and _same(_base_weights(nlp), base)


def test_every_episode_starts_from_the_original_weights(tiny_model_dir):
    nlp = _nlp(tiny_model_dir)
    pipe = nlp.get_pipe("fsner")
    base = _base_weights(nlp)
    pipe.adapt(_episode_b(nlp), labels=LABELS)
    b_direct, b_logprobs = _weights(pipe.model.generator.model, EPISODE_ADAPTER), _logprobs(nlp)
    pipe.adapt(_episode_a(nlp), labels=LABELS)
    a_weights = _weights(pipe.model.generator.model, EPISODE_ADAPTER)
    pipe.adapt(_episode_b(nlp), labels=LABELS)
    assert _same(_weights(pipe.model.generator.model, EPISODE_ADAPTER), b_direct)
    assert not _same(a_weights, b_direct)
    assert _logprobs(nlp) == b_logprobs
    assert _same(_base_weights(nlp), base)
    # a fresh pipeline adapted to B alone gets the same adapter
    fresh = _nlp(tiny_model_dir)
    fresh.get_pipe("fsner").adapt(_episode_b(fresh), labels=LABELS)
    assert _same(_weights(fresh.get_pipe("fsner").model.generator.model, EPISODE_ADAPTER), b_direct)


def test_a_pipeline_adapter_is_fine_tuned_further_and_saved_unchanged(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora).save_pretrained(tmp_path / "adapter")
    original = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    nlp = _nlp(tiny_model_dir, adapter=str(tmp_path / "adapter"))
    pipe = nlp.get_pipe("fsner")
    model = pipe.model.generator.model
    default = _weights(model, "default")
    pipe.task.set_labels(LABELS)
    before = _logprobs(nlp)

    pipe.adapt(_episode_a(nlp), labels=LABELS)
    assert model.active_adapter == EPISODE_ADAPTER and _same(_weights(model, "default"), default)
    episode = _weights(model, EPISODE_ADAPTER)
    assert len(episode) == len(default) == 8  # the pipeline's adapter continued: its modules, its rank
    renamed = {k.replace(f".{EPISODE_ADAPTER}.", ".default."): v for k, v in episode.items()}
    assert not _same(renamed, default), "the episode's copy of the adapter trained"
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [], "frozen again after training"

    nlp.to_disk(tmp_path / "pipeline")  # the pipeline as configured: its own adapter, not the episode's
    saved = load_file(tmp_path / "pipeline" / "fsner" / "model" / "adapter" / "adapter_model.safetensors")
    assert _same(saved, original)
    reloaded = spacy.load(tmp_path / "pipeline")
    assert reloaded.get_pipe("fsner").labels == tuple(LABELS)
    assert _logprobs(reloaded) == before
    assert _logprobs(nlp) != before, "the live pipeline stays adapted"


def test_a_type_without_support_entities_trains_and_an_unknown_label_is_an_error(tiny_model_dir):
    nlp = _nlp(tiny_model_dir)
    pipe = nlp.get_pipe("fsner")
    support = [_doc(nlp, "Angela Merkel visited Paris .", [(0, 2, "PER")])]
    pipe.adapt(support, labels=["PER", "LOC", "ORG"])  # LOC and ORG: absent answers only
    assert pipe.model.generator.model.active_adapter == EPISODE_ADAPTER
    assert [e["step"] for e in pipe.adaptation.log_history if "loss" in e] == [1, 2, 3]

    unknown = [_doc(nlp, "EU talks in Rome .", [(0, 1, "ORG"), (3, 4, "LOC")])]
    with pytest.raises(ValueError, match=r"labelled \['ORG'\], which the task does not know"):
        pipe.adapt(unknown, labels=LABELS)
    loaded = pipe.model.loaded_model
    assert pipe.model.generator.model is loaded and not any("lora_" in k for k in loaded.state_dict())


def test_a_failed_training_leaves_the_original_model(tiny_model_dir, monkeypatch):
    nlp = _nlp(tiny_model_dir)
    pipe = nlp.get_pipe("fsner")
    base = _base_weights(nlp)

    def fail(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(FineTuneAdaptation, "_train", fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        pipe.adapt(_episode_a(nlp), labels=LABELS)
    loaded = pipe.model.generator.model
    assert loaded is pipe.model.loaded_model and not any("lora_" in k for k in loaded.state_dict())
    assert all(p.requires_grad for p in loaded.parameters()) and not loaded.training
    assert _same(_base_weights(nlp), base)


def test_demonstrations_setting_and_switching_back_to_in_context(tiny_model_dir):
    nlp = _nlp(tiny_model_dir, {**FINE_TUNE, "steps": 1, "demonstrations": True})
    pipe = nlp.get_pipe("fsner")
    loaded = pipe.model.generator.model
    pipe.adapt(_episode_a(nlp), labels=LABELS)
    assert "Angela Merkel visited Paris" in pipe.task.prompt_prefix("PER")
    assert pipe.model.generator.model is not loaded
    pipe.adaptation = InContextAdaptation()
    pipe.adapt(_episode_b(nlp), labels=LABELS)
    assert pipe.model.generator.model is loaded, "in-context adaptation uses the model as loaded"
    assert "Mary flew to Madrid" in pipe.task.prompt_prefix("LOC")


def test_fine_tuning_a_retrieving_pipeline_retrieves_from_the_support_set(tiny_model_dir):
    nlp = spacy.blank("en")
    config = fsner_config(tiny_model_dir)
    config["adaptation"] = {**FINE_TUNE, "steps": 1}
    config["retriever"] = {"@misc": "spacy_fsner.RandomRetriever.v1", "k": 1}
    nlp.add_pipe("fsner", config=config)
    pipe = nlp.get_pipe("fsner")
    pipe.adapt(_episode_b(nlp), labels=LABELS)
    assert [e.text for e in pipe.task.retriever.pool] == [d.text for d in _episode_b(nlp)]
    (prompts,) = pipe.task.generate_prompts(_queries(nlp)[:1])
    assert sum(d.text in prompts.texts()[0] for d in _episode_b(nlp)) == 1


def test_fine_tuning_needs_a_causal_lm():
    nlp = spacy.blank("en")
    model = {"@llm_models": "spacy_fsner.test.ScriptedLM.v1", "answers": {}}
    nlp.add_pipe("fsner", config={"labels": LABELS, "model": model, "adaptation": FINE_TUNE})
    with pytest.raises(TypeError, match="InContextAdaptation"):
        nlp.get_pipe("fsner").adapt(_episode_a(nlp), labels=LABELS)


def test_evaluate_episodes_fine_tunes_on_each_support_set(tiny_model_dir):
    nlp = _nlp(tiny_model_dir, {**FINE_TUNE, "steps": 2})
    episodes = [
        Episode(support=_episode_a(nlp), query=_episode_b(nlp), types=LABELS),
        Episode(
            support=[_doc(nlp, "Siemens hired Anna .", [(0, 1, "ORG"), (2, 3, "PER")])],
            query=[_doc(nlp, "Anna left Siemens .", [(0, 1, "PER"), (2, 3, "ORG")])],
            types=["ORG", "PER"],
        ),
    ]
    results = evaluate_episodes(nlp, episodes, batch_size=2, progress=False)
    assert {"fewnerd_episodes", "hou_episodes", "span_exact"} <= set(results)
    pipe = nlp.get_pipe("fsner")
    assert pipe.labels == ("ORG", "PER") and pipe.model.generator.model.active_adapter == EPISODE_ADAPTER
    assert pipe.stats["docs"] == 4


def test_registered_objectives_are_added_to_the_episode_loss(tiny_model_dir):
    objective = {"@misc": "spacy_fsner.HiddenStateContrastive.v1", "weight": 0.1, "layer": -1, "noise": True}
    nlp = _nlp(tiny_model_dir, {**FINE_TUNE, "objectives": {"cl": objective}})
    pipe = nlp.get_pipe("fsner")
    pipe.adapt(_episode_a(nlp), labels=LABELS)
    logged = [e for e in pipe.adaptation.log_history if "loss" in e]
    assert len(logged) == 3 and all("cl_hidden" in e and "nll" in e for e in logged)
    model = pipe.model.generator.model
    assert not any(module._forward_hooks for module in model.modules()), "the objective's hooks are removed"
    first = _weights(model, EPISODE_ADAPTER)
    pipe.adapt(_episode_a(nlp), labels=LABELS)  # the objective's noise generator starts again too
    assert _same(_weights(pipe.model.generator.model, EPISODE_ADAPTER), first)


def test_evaluate_command_fine_tunes_per_episode(tiny_model_dir, tmp_path, shared_data):
    import json

    import spacy
    from typer.testing import CliRunner

    from spacy_fsner.cli import app

    nlp = spacy.blank("en")
    nlp.add_pipe(
        "fsner",
        config={
            "labels": ["PER"],
            "model": {"@llm_models": "spacy_fsner.CausalLM.v1", "name": str(tiny_model_dir), "max_new_tokens": 8},
        },
    )
    nlp.to_disk(tmp_path / "pipeline")
    episodes = shared_data / "fewnerd" / "episodes_sample" / "inter" / "dev_5_1.recased.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "pipeline"),
            str(episodes),
            "--limit",
            "1",
            "--fine-tune-steps",
            "2",
            "--output",
            str(tmp_path / "m.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "m.json").read_text())["settings"]
    assert settings["n_episodes"] == 1
    assert settings["adaptation"]["@misc"] == "spacy_fsner.FineTuneAdaptation.v1"
    assert settings["adaptation"]["steps"] == 2
    command = ["evaluate", str(tmp_path / "pipeline"), str(episodes), "--limit", "1", "--fine-tune-steps", "2"]
    result = CliRunner().invoke(
        app, [*command, "--fine-tune-objective", "attention", "--output", str(tmp_path / "a.json")]
    )
    assert result.exit_code == 0, result.output
    adaptation = json.loads((tmp_path / "a.json").read_text())["settings"]["adaptation"]
    assert adaptation["objectives"]["cl_attention"]["@misc"] == "spacy_fsner.AttentionContrastive.v1"
    result = CliRunner().invoke(app, [*command[:-2], "--fine-tune-objective", "attention"])
    assert result.exit_code == 1 and "together with --fine-tune-steps N" in result.output
    result = CliRunner().invoke(app, [*command, "--fine-tune-objective", "dpo"])
    assert result.exit_code == 1 and "use one of attention, hidden" in result.output
