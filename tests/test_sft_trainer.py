"""ContrastiveSFTTrainer on the tiny Llama: columns reach the loss, every term is logged, LoRA trains, base frozen."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from test_objectives import make_record, make_records  # tests/ is on sys.path under pytest
from trl import SFTConfig
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from spacy_fsner.training.collator import ContrastiveCollator
from spacy_fsner.training.objectives import AttentionContrastive, HiddenStateContrastive, hidden_state_contrastive_v1
from spacy_fsner.training.sft_config import ContrastiveSFTConfig
from spacy_fsner.training.sft_trainer import ContrastiveSFTTrainer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def dataset(tokenizer) -> Dataset:
    return Dataset.from_list(make_records(tokenizer))


def make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path, objectives, config_class=ContrastiveSFTConfig, **config):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    settings = {
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-2,
        "max_length": 128,
        "seed": 0,
        "disable_tqdm": True,
        "shuffle_dataset": False,
        **config,
    }
    args = config_class(output_dir=str(tmp_path / "out"), **settings)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0)
    return ContrastiveSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        objectives=objectives,
    )


def test_collator_pads_and_follows_truncation(tokenizer):
    base = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    short = make_record(tokenizer, ["Mary", "lives", "in", "Madrid", "."], [1, 0, 0, 2, 0], 2)
    long = make_record(tokenizer, ["Angela", "Merkel", "met", "John", "Smith", "."], [1, 1, 0, 1, 1, 0], 1)
    records = [dict(r, labels=[-100] * len(r["input_ids"])) for r in (short, long)]
    batch = ContrastiveCollator(base)(records)
    length = batch["input_ids"].shape[1]
    assert length == len(long["input_ids"])
    assert batch["token_types"].shape == (2, length)
    assert batch["token_types"][0, len(short["input_ids"]) :].eq(-1).all()
    assert batch["token_types"][0, : len(short["input_ids"])].tolist() == short["token_types"]
    assert batch["entity_spans"].shape == (2, 2, 2)
    assert batch["entity_spans"][0].tolist() == [short["entity_spans"][0], [-1, -1]]
    assert batch["label_positions"][1].tolist()[: len(long["label_positions"])] == long["label_positions"]
    assert batch["label"] == ["location", "person"]

    # TRL truncated input_ids / labels only: the collator cuts the objective columns the same way
    first_span_end = long["entity_spans"][0][1]
    cut = [dict(long, input_ids=long["input_ids"][: first_span_end + 1], labels=[-100] * (first_span_end + 1))]
    batch = ContrastiveCollator(base, "keep_start")(cut)
    assert batch["token_types"].shape[1] == first_span_end + 1
    assert batch["entity_spans"][0].tolist() == [long["entity_spans"][0], [-1, -1]]  # the cut span is dropped
    keep = len(long["input_ids"]) - long["entity_spans"][1][0] + 1  # the second entity and what follows
    cut = [dict(long, input_ids=long["input_ids"][-keep:], labels=[-100] * keep)]
    batch = ContrastiveCollator(base, "keep_end")(cut)
    offset = len(long["input_ids"]) - keep
    assert batch["token_types"][0].tolist() == long["token_types"][-keep:]
    assert batch["entity_spans"][0, 0].tolist() == [s - offset for s in long["entity_spans"][1]]
    assert batch["label_positions"][0].tolist() == [-1] * len(long["label_positions"])  # the prompt was cut
    with pytest.raises(ValueError, match="one value per token"):
        ContrastiveCollator(base)([dict(records[0], token_types=[0])])


def test_dataloader_keeps_objective_columns_and_masks_the_prompt(tiny_model_dir, tokenizer, dataset, tmp_path):
    trainer = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path, [HiddenStateContrastive(layer=0)])
    batch = next(iter(trainer.get_train_dataloader()))
    assert {"input_ids", "labels", "attention_mask", "token_types", "label_positions", "entity_spans"} <= set(batch)
    by_ids = {tuple(record["input_ids"]): record for record in dataset}
    for row in range(batch["input_ids"].shape[0]):
        n = int(batch["attention_mask"][row].sum())
        record = by_ids[tuple(batch["input_ids"][row, :n].tolist())]  # the sampler shuffles the rows
        loss_on = (batch["labels"][row, :n] != -100).tolist()
        assert loss_on == [bool(m) for m in record["completion_mask"]]  # loss on the completion only
        assert batch["token_types"][row, :n].tolist() == record["token_types"]
    trainer.remove_hooks()


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", [1, 2])
def test_training_logs_every_term_and_trains_lora_only(tiny_model_dir, tokenizer, dataset, tmp_path, accumulation):
    objectives = [
        HiddenStateContrastive(weight=0.5, layer=0.5, noise=True),
        AttentionContrastive(weight=0.25, layer=-1),
    ]
    trainer = make_trainer(
        tiny_model_dir,
        tokenizer,
        dataset,
        tmp_path,
        objectives,
        per_device_train_batch_size=4 // accumulation,
        gradient_accumulation_steps=accumulation,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    steps = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(steps) == 3
    for entry in steps:
        assert {"nll", "cl_hidden", "cl_attention"} <= set(entry)
        assert all(entry[key] > 0 for key in ("nll", "cl_hidden", "cl_attention"))
        # the logged total is the NLL plus the weighted objectives (Eq. 6 / Eq. 4), also under accumulation
        combined = entry["nll"] + 0.5 * entry["cl_hidden"] + 0.25 * entry["cl_attention"]
        assert entry["loss"] == pytest.approx(combined, abs=2e-3)
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    lora = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    assert changed == lora  # every LoRA weight moved, no base weight did


def test_trainer_settings_are_checked(tiny_model_dir, tokenizer, dataset, tmp_path):
    # a plain SFTConfig left at TRL's completion_only_loss=None (ContrastiveSFTConfig refuses it itself)
    plain_config = {"config_class": SFTConfig, "use_cpu": True, "bf16": False, "completion_only_loss": None}
    with pytest.raises(ValueError, match="completion_only_loss=True"):
        make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path, [], **plain_config)
    plain = dataset.remove_columns(["token_types"])
    with pytest.raises(ValueError, match="no `token_types` column"):
        make_trainer(tiny_model_dir, tokenizer, plain, tmp_path, [AttentionContrastive()])
    with pytest.raises(ValueError, match="unique"):
        make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path, [HiddenStateContrastive(), HiddenStateContrastive()])
    # the "no CL" ablation row: a disabled objective adds nothing and hooks nothing
    trainer = make_trainer(
        tiny_model_dir, tokenizer, dataset, tmp_path, [hidden_state_contrastive_v1(contrastive=False)]
    )
    assert trainer.objectives == []
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    assert torch.isfinite(loss) and "cl_hidden" not in trainer._metrics["train"]


def test_length_grouped_order_on_several_processes_is_seeded_and_grouped_by_the_global_batch(
    tiny_model_dir, tokenizer, dataset, tmp_path, monkeypatch
):
    """Every process must deal out the same order in every epoch: on several processes the length-grouped sampler
    draws from a generator seeded with the run's seed (not the global random state, which LoRA's dropout moves
    differently on each process), grouped by the global batch; on one process it stays transformers' own."""
    settings = {"train_sampling_strategy": "group_by_length", "per_device_train_batch_size": 2}
    trainer = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path, [], gradient_accumulation_steps=2, **settings)
    alone = trainer._get_train_sampler()
    assert alone.generator is None and alone.batch_size == 4
    monkeypatch.setattr(type(trainer.args), "world_size", property(lambda self: 2))
    first, again = trainer._get_train_sampler(), trainer._get_train_sampler()
    assert first.batch_size == 2 * 2 * 2  # records per forward x accumulation x processes
    torch.manual_seed(1)  # the global random state of one process ...
    order = list(first)
    torch.manual_seed(2)  # ... and of another
    assert list(again) == order and sorted(order) == list(range(len(dataset)))
    trainer.remove_hooks()
