"""DPO on preference pairs (OBP-LLM stage 3): our token ids reach the model unchanged, the loss is sigmoid DPO plus the
weighted SFT term, training raises the reward margin, and an SFT adapter becomes the frozen reference."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import spacy
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from spacy.tokens import Doc, Span
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOTrainer

from spacy_fsner.pipeline.task import make_ner_task
from spacy_fsner.training.dpo_config import PreferenceDPOConfig
from spacy_fsner.training.dpo_trainer import PreferenceDPOTrainer, build_dpo_trainer, load_sft_adapter
from spacy_fsner.training.preference_pairs import PreferencePair, boundary_shift_pairs, dpo_dataset, dpo_records

torch.set_num_threads(1)

NLP = spacy.blank("en")
LORA = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}


def make_doc(text: str, ents: list[tuple[int, int, str]]) -> Doc:
    doc = NLP(text)
    doc.ents = [Span(doc, start, end, label) for start, end, label in ents]
    return doc


def boundary_pairs() -> list[PreferencePair]:
    docs = [
        make_doc("Obama visited New York City .", [(0, 1, "PER"), (2, 5, "LOC")]),
        make_doc("Merkel met Macron in Paris .", [(0, 1, "PER"), (2, 3, "PER"), (4, 5, "LOC")]),
    ]
    return boundary_shift_pairs(docs, make_ner_task(["PER", "LOC"]))


# A prompt split inside a word: encoded as one string (as TRL does), "visi" + "ted" merge into other tokens.
SPLIT_PAIR = PreferencePair("Text: visi", "ted Paris", ["Paris"], ["ted Paris"], "boundary", "LOC")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def base_model(tiny_model_dir: Path):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def config(tmp_path: Path, **overrides):
    settings = {"seed": 0, "disable_tqdm": True, "max_steps": 1, "per_device_train_batch_size": 4}
    return PreferenceDPOConfig(output_dir=str(tmp_path / "out"), **{**settings, **overrides})


def test_batch_holds_our_ids_unchanged(tiny_model_dir: Path, tokenizer, tmp_path: Path) -> None:
    """Each collated row is exactly our prompt ids followed by our chosen (first half) or rejected (second half) ids,
    with the completion mask on the answer, where TRL's own preparation would re-tokenize the prompt."""
    pairs = [*boundary_pairs(), SPLIT_PAIR]
    records = dpo_records(pairs, tokenizer)
    trainer = build_dpo_trainer(
        base_model(tiny_model_dir),
        tokenizer,
        dpo_dataset(pairs, tokenizer),
        config(tmp_path, per_device_train_batch_size=len(pairs)),
        peft_config=LoraConfig(**LORA),
    )
    assert isinstance(trainer, PreferenceDPOTrainer)
    # what stock TRL 1.16 makes of the same dataset: other prompt ids for the pair split inside a word
    stock = DPOTrainer._prepare_dataset(trainer, dpo_dataset(pairs, tokenizer), tokenizer, trainer.args, "train")
    assert stock[len(pairs) - 1]["prompt_ids"] != records[-1]["prompt_input_ids"]

    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "completion_mask"}
    n = len(pairs)
    rows = []
    for i in range(2 * n):
        length = int(batch["attention_mask"][i].sum())
        assert batch["attention_mask"][i, :length].all() and not batch["attention_mask"][i, length:].any()
        ids, mask = batch["input_ids"][i, :length].tolist(), batch["completion_mask"][i, :length].tolist()
        prompt_length = mask.index(1)
        assert mask == [0] * prompt_length + [1] * (length - prompt_length)
        rows.append((tuple(ids[:prompt_length]), tuple(ids[prompt_length:])))
    # row i and row n + i are the same pair (same prompt); the sampler shuffles the pairs
    assert all(prompt == same for (prompt, _), (same, _) in zip(rows[:n], rows[n:], strict=True))
    triples = [(prompt, chosen, rejected) for (prompt, chosen), (_, rejected) in zip(rows[:n], rows[n:], strict=True)]
    expected = sorted(
        (tuple(r["prompt_input_ids"]), tuple(r["chosen_input_ids"]), tuple(r["rejected_input_ids"])) for r in records
    )
    assert sorted(triples) == expected


def test_loss_is_sigmoid_plus_weighted_token_mean_nll_of_chosen(tiny_model_dir: Path, tokenizer, tmp_path) -> None:
    """At the start (new LoRA adapter = reference) the sigmoid term is log 2, so the loss is log 2 + 0.2 * the
    token-mean NLL of the chosen completions, computed here independently with the plain base model."""
    pairs = boundary_pairs()[:3]
    records = dpo_records(pairs, tokenizer)
    trainer = build_dpo_trainer(
        base_model(tiny_model_dir), tokenizer, pairs, config(tmp_path), peft_config=LoraConfig(**LORA)
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    token_logps = []
    with torch.no_grad():
        for record in records:
            prompt, chosen = record["prompt_input_ids"], record["chosen_input_ids"]
            logits = reference(torch.tensor([prompt + chosen])).logits[0, len(prompt) - 1 : -1]
            token_logps.append(logits.log_softmax(-1).gather(1, torch.tensor(chosen)[:, None]).squeeze(1))
    nll = -torch.cat(token_logps).mean().item()
    assert loss == pytest.approx(math.log(2) + 0.2 * nll, rel=1e-4)
    assert trainer._metrics["train"]["rewards/margins"] == [pytest.approx(0.0, abs=1e-6)]
    assert config(tmp_path, sft_weight=0).loss_type == ["sigmoid"]
    assert (trainer.args.loss_type, trainer.args.loss_weights, trainer.args.beta) == (
        ["sigmoid", "sft"],
        [1.0, 0.2],
        0.1,
    )


@pytest.mark.slow
def test_training_raises_the_reward_margin(tiny_model_dir: Path, tokenizer, tmp_path: Path) -> None:
    """30 steps at a high learning rate: TRL's reward metrics are logged every step, the margin rises and the chosen
    answer wins on most pairs."""
    trainer = build_dpo_trainer(
        base_model(tiny_model_dir),
        tokenizer,
        boundary_pairs(),
        config(tmp_path, max_steps=30, learning_rate=2e-3),
        peft_config=LoraConfig(**LORA),
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    assert len(logs) == 30
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "logps/chosen"} <= set(logs[0])
    margins = [entry["rewards/margins"] for entry in logs]
    accuracies = [entry["rewards/accuracies"] for entry in logs]
    assert margins[0] == pytest.approx(0.0, abs=1e-6)
    assert sum(margins[-5:]) / 5 > max(0.005, 2 * sum(margins[:5]) / 5)
    assert sum(accuracies[-10:]) / 10 > 0.5
    assert logs[-1]["loss"] < logs[0]["loss"]


def test_sft_adapter_is_the_frozen_reference(tiny_model_dir: Path, tokenizer, tmp_path: Path) -> None:
    """With a PeftModel carrying a (perturbed) SFT adapter: the reference is base + that adapter (rewards start at
    exactly 0), a frozen copy named "ref" keeps its weights, the trained adapter moves, the base stays."""
    model = get_peft_model(base_model(tiny_model_dir), LoraConfig(**LORA))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.05)
    sft = {name: p.detach().clone() for name, p in model.named_parameters() if ".default." in name}
    base = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" not in name}
    trainer = build_dpo_trainer(model, tokenizer, boundary_pairs(), config(tmp_path, max_steps=3, learning_rate=1e-3))
    trainer.train()
    first = next(entry for entry in trainer.state.log_history if "rewards/chosen" in entry)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    assert first["rewards/rejected"] == pytest.approx(0.0, abs=1e-6)
    parameters = dict(trainer.model.named_parameters())
    for name, before in sft.items():
        reference = parameters[name.replace(".default.", ".ref.")]
        assert not reference.requires_grad and torch.equal(reference, before), name
    assert any(not torch.equal(parameters[name], before) for name, before in sft.items())
    assert all(torch.equal(parameters[name], before) for name, before in base.items())


def test_bad_input_names_the_fix(tiny_model_dir: Path, tokenizer, tmp_path: Path) -> None:
    pairs = boundary_pairs()
    records = dpo_records(pairs, tokenizer)
    longest = max(
        len(r["prompt_input_ids"]) + max(len(r["chosen_input_ids"]), len(r["rejected_input_ids"])) for r in records
    )
    dataset = dpo_dataset(pairs, tokenizer)
    lora = LoraConfig(**LORA)
    with pytest.raises(ValueError, match=rf"needs {longest} tokens, more than max_length {longest - 1}.*truncate"):
        build_dpo_trainer(
            base_model(tiny_model_dir), tokenizer, dataset, config(tmp_path, max_length=longest - 1), peft_config=lora
        )
    with pytest.raises(ValueError, match=r"lacks the columns \['chosen_input_ids'.*dpo_dataset"):
        build_dpo_trainer(
            base_model(tiny_model_dir),
            tokenizer,
            dataset.select_columns(["prompt", "chosen", "rejected"]),
            config(tmp_path),
            peft_config=lora,
        )
    with pytest.raises(TypeError, match="IterableDataset"):
        build_dpo_trainer(
            base_model(tiny_model_dir), tokenizer, dataset.to_iterable_dataset(), config(tmp_path), peft_config=lora
        )
    with pytest.raises(ValueError, match="peft_config"):
        build_dpo_trainer(base_model(tiny_model_dir), tokenizer, dataset, config(tmp_path))
    peft_model = get_peft_model(base_model(tiny_model_dir), lora)
    with pytest.raises(ValueError, match="not both"):
        build_dpo_trainer(peft_model, tokenizer, dataset, config(tmp_path), peft_config=lora)
    peft_model.save_pretrained(tmp_path / "sft")
    frozen = PeftModel.from_pretrained(base_model(tiny_model_dir), tmp_path / "sft")
    with pytest.raises(ValueError, match="is_trainable=True"):
        build_dpo_trainer(frozen, tokenizer, dataset, config(tmp_path))
    assert any(p.requires_grad for p in load_sft_adapter(base_model(tiny_model_dir), tmp_path / "sft").parameters())
    named = get_peft_model(base_model(tiny_model_dir), lora, adapter_name="sft")
    with pytest.raises(ValueError, match=r"adapters \['sft'\].*'default'"):
        build_dpo_trainer(named, tokenizer, dataset, config(tmp_path))
    with pytest.raises(ValueError, match="sft_weight"):
        config(tmp_path, sft_weight=-1)
