"""Worker of tests/test_distributed.py: a few LoRA training steps of NLL + both contrastive objectives (attention CL,
hidden-state CL with the noise view) on the tiny Llama, either on one process (each global batch's micro-batches
accumulated) or sharded with FSDP2 (`fully_shard` on every decoder layer and the model, gloo on CPUs: accelerate
turns FSDP on for GPUs only) over the processes of `torch.distributed.run`, one micro-batch each.

    python tests/fsdp_worker.py MODEL_DIR OUT.pt            # one process
    python -m torch.distributed.run --nproc_per_node 2 tests/fsdp_worker.py MODEL_DIR OUT.pt

Every global batch holds two micro-batches, the second one without entities: the process that trains it has no
anchor and no token that needs a noised view, yet must run the noise pass (every layer's all-gather) like the other.
The main process writes the per-micro-batch losses and the trained LoRA weights (whole) to OUT.pt.
"""

from __future__ import annotations

import dataclasses
import sys

import torch
import torch.distributed as dist
from test_objectives import collate, lora_model, make_records
from transformers import AutoTokenizer

from spacy_fsner.training.objectives import AttentionContrastive, ContrastiveBatch, HiddenStateContrastive

STEPS = 3
MICRO = 2  # micro-batches per global batch (the processes of the sharded run)


def micro_batches(model_dir: str) -> list[ContrastiveBatch]:
    """STEPS * MICRO micro-batches of 2 records; every second one without entities."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    records = make_records(tokenizer)  # 8 records
    batches = []
    for index in range(STEPS * MICRO):
        chosen = [records[(2 * index) % len(records)], records[(2 * index + 1) % len(records)]]
        batch = collate(chosen, tokenizer.pad_token_id)
        if index % MICRO:
            no_spans = torch.full_like(batch.entity_spans, -1)
            batch = dataclasses.replace(batch, token_types=batch.token_types.clamp(max=0), entity_spans=no_spans)
        batches.append(batch)
    return batches


def loss_of(model, objectives, batch: ContrastiveBatch, index: int, sharded: bool) -> torch.Tensor:
    """NLL on the batch's real tokens + 0.5 * each objective, as `ContrastiveSFTTrainer` adds them."""
    for objective in objectives:
        objective.reset()
        objective.batch_index, objective.sharded_model = index, (model if sharded else None)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels, use_cache=False).loss
    for objective in objectives:
        loss = loss + 0.5 * objective.compute(batch)
        objective.reset()
    return loss


def main(model_dir: str, out: str) -> None:
    sharded = "WORLD_SIZE" in __import__("os").environ
    if sharded:
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        assert world == MICRO, f"run on {MICRO} processes"
    else:
        rank, world = 0, 1
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = lora_model(model_dir).train()
    objectives = [
        AttentionContrastive(layer=-1),
        HiddenStateContrastive(layer=0, noise=True, max_negatives=8, name="cl_hidden"),
    ]
    for objective in objectives:  # before sharding, as the trainer attaches them
        objective.attach(model)
    if sharded:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in model.get_base_model().model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    batches = micro_batches(model_dir)
    losses = []
    for step in range(STEPS):
        mine = [rank] if sharded else list(range(MICRO))
        step_losses = []
        for micro in mine:
            index = step * MICRO + micro
            loss = loss_of(model, objectives, batches[index], index, sharded)
            (loss if sharded else loss / MICRO).backward()  # FSDP averages the processes' gradients
            step_losses.append(loss.detach())
        if sharded:
            gathered = [torch.zeros(()) for _ in range(world)]
            dist.all_gather(gathered, step_losses[0])
            step_losses = gathered
        losses.append([value.item() for value in step_losses])
        optimizer.step()
        optimizer.zero_grad()
    weights = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            whole = parameter.full_tensor() if hasattr(parameter, "full_tensor") else parameter
            weights[name] = whole.detach().clone()
    if rank == 0:
        torch.save({"losses": losses, "weights": weights}, out)
    if sharded:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
