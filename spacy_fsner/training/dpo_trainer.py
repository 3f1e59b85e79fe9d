"""`PreferenceDPOTrainer`: TRL's DPOTrainer on our pre-tokenized preference pairs (OBP-LLM stage 3).

    loss = -log sigmoid(beta * margin) + sft_weight * NLL(chosen completion tokens)

with beta = 0.1 and sft_weight (alpha) = 0.2 by default: TRL's `loss_type=["sigmoid", "sft"]`,
`loss_weights=[1.0, alpha]`, set by `PreferenceDPOConfig` (`dpo_config.py`). The SFT term is the token-mean NLL of the
chosen completions of the batch.

Why a subclass: TRL 1.16's `DPOTrainer._prepare_dataset` always re-tokenizes the text columns (`prompt` as one
string with special tokens, `prompt + chosen` and `prompt + rejected` as one string each, the EOS appended as text)
and derives `prompt_ids`/`chosen_ids`/`rejected_ids` from where they diverge. Our prompts must be the ids the
generator sees (`encode_prompt`: prefix with special tokens and suffix without, encoded separately, so the cached
prefix stays valid), so this trainer takes `dpo_dataset`'s id columns unchanged. Everything else is TRL's: the
collator (`prompt_ids + chosen_ids` and `prompt_ids + rejected_ids`, right-padded, chosen rows first), the loss,
and the logged metrics (`rewards/margins`, `rewards/accuracies`, `rewards/chosen`, `rewards/rejected`,
`logps/chosen`, `logps/rejected`, ... in `trainer.state.log_history`). The SFT term is not logged on its own: it is
the logged `loss` minus the sigmoid term.

Truncation: TRL's collator cuts every `prompt + completion` to `max_length` silently (losing the completion's end
and EOS) and its dataset preparation drops pairs whose prompt fills `max_length`. Here a pair longer than
`max_length` raises instead, so the collator never truncates.

The reference model: given a `PeftModel` carrying the SFT adapter (named "default"), TRL copies that adapter into a
second, frozen adapter named "ref" and computes the reference log-probs with it, so the reference is base + SFT
adapter and the "default" adapter is trained further. Given a base model and a `LoraConfig`, the reference is the
base model (adapters disabled). Note that `trainer.save_model()` then saves both adapters: the trained one in
`output_dir`, the reference one in `output_dir/ref`; `PeftModel.from_pretrained(base, output_dir)` loads the
trained one.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

from datasets import Dataset, IterableDataset
from peft import PeftConfig, PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from trl import DPOConfig, DPOTrainer

from .fused_head import score_labelled_positions
from .preference_pairs import PreferencePair, dpo_dataset

ID_COLUMNS = {"prompt_input_ids": "prompt_ids", "chosen_input_ids": "chosen_ids", "rejected_input_ids": "rejected_ids"}
"""Our columns (`dpo_dataset`) and the names TRL's collator reads."""


class PreferenceDPOTrainer(DPOTrainer):
    """DPOTrainer that trains on `dpo_dataset`'s token ids unchanged (no re-tokenization, no silent truncation).

    Takes the same arguments as `DPOTrainer`; the datasets must have the columns `prompt_input_ids`,
    `chosen_input_ids`, `rejected_input_ids` (`dpo_dataset`), or already TRL's `prompt_ids`, `chosen_ids`,
    `rejected_ids`. Build it with `build_dpo_trainer`, which also checks the model.
    """

    def _prepare_dataset(
        self,
        dataset: Dataset | IterableDataset,
        processing_class: Any,
        args: DPOConfig,
        dataset_name: str,
    ) -> Dataset:
        # our ids are final (TRL would re-tokenize the text); rename them for TRL's collator, refuse to truncate
        if isinstance(dataset, IterableDataset):
            raise TypeError(
                f"The {dataset_name} dataset is an IterableDataset; pass a `datasets.Dataset` (`dpo_dataset`), so "
                "every pair's length can be checked against max_length before training."
            )
        columns = set(dataset.column_names)
        if set(ID_COLUMNS) <= columns:  # ours win over TRL's names, should both be there
            dataset = dataset.remove_columns(sorted(columns & set(ID_COLUMNS.values()))).rename_columns(ID_COLUMNS)
        elif not set(ID_COLUMNS.values()) <= columns:  # neither ours nor already prepared (e.g. by `evaluate`)
            raise ValueError(
                f"The {dataset_name} dataset lacks the columns {sorted(set(ID_COLUMNS) - columns)} (it has "
                f"{sorted(columns)}): build it with `spacy_fsner.training.preference_pairs.dpo_dataset`, which "
                "encodes prompts as the generator does."
            )
        if args.max_length is not None:
            for index, (prompt, chosen, rejected) in enumerate(
                zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
            ):
                length = len(prompt) + max(len(chosen), len(rejected))
                if length > args.max_length:
                    raise ValueError(
                        f"Pair {index} of the {dataset_name} dataset needs {length} tokens, more than max_length "
                        f"{args.max_length}; TRL would truncate it silently. Raise `max_length` in the DPOConfig, or "
                        "build the pairs with `dpo_dataset(..., max_length=...)` to see which pairs are too long."
                    )
        return dataset


def build_dpo_trainer(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: Dataset | Sequence[PreferencePair],
    args: DPOConfig,
    *,
    peft_config: PeftConfig | None = None,
    eval_dataset: Dataset | Sequence[PreferencePair] | None = None,
    callbacks: list[TrainerCallback] | None = None,
) -> PreferenceDPOTrainer:
    """A `PreferenceDPOTrainer` for `model`: either a `PeftModel` carrying the SFT adapter (DPO after SFT: the
    adapter is trained further, its frozen copy is the reference) or a base model plus `peft_config` (a new LoRA
    adapter, the base model is the reference).

    Datasets are `dpo_dataset`s or lists of `PreferencePair`s (encoded here with `args.max_length`).
    """
    if isinstance(model, PeftModel):
        if peft_config is not None:
            raise ValueError(
                "Pass either a PeftModel carrying the SFT adapter or a base model with `peft_config`, not both: the "
                "PeftModel's adapter is the one trained further (and copied as the reference)."
            )
        adapters = list(model.peft_config)
        if adapters != ["default"]:
            raise ValueError(
                f"The PeftModel has the adapters {adapters}; TRL copies only one named 'default' into the frozen "
                "reference adapter. Load the SFT adapter alone under that name (`load_sft_adapter`)."
            )
        if not any(parameter.requires_grad for parameter in model.parameters()):
            raise ValueError(
                "The PeftModel's adapter is frozen (loaded for inference); load it with "
                "`PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)` (`load_sft_adapter`)."
            )
    elif peft_config is None:
        raise ValueError(
            "Pass a `peft_config` (e.g. a LoraConfig) with a base model, or a PeftModel carrying the SFT adapter "
            "(`load_sft_adapter`): this stage trains a LoRA adapter, not the full model."
        )

    def as_dataset(data: Dataset | Sequence[PreferencePair]) -> Dataset:
        if isinstance(data, Dataset | IterableDataset):  # an IterableDataset is refused by the trainer, with the fix
            return data
        return dpo_dataset(data, tokenizer, max_length=args.max_length)

    score_labelled_positions()
    return PreferenceDPOTrainer(
        model,
        args=args,
        train_dataset=as_dataset(train_dataset),
        eval_dataset=None if eval_dataset is None else as_dataset(eval_dataset),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def load_sft_adapter(base_model: PreTrainedModel, adapter_dir: str | PathLike[str]) -> PeftModel:
    """The base model with the SFT stage's saved adapter, trainable and named "default" (what `build_dpo_trainer`
    needs; `PeftModel.from_pretrained` loads an adapter frozen by default)."""
    return PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=True)
