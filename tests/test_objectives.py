"""Contrastive objectives (CLLMFS hidden-state CL, with noise; OBP-LLM attention CL, Eq. 3) on the tiny Llama."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from confection import Config
from spacy.util import registry

from spacy_fsner.training.objectives import (
    AttentionContrastive,
    ContrastiveBatch,
    HiddenStateContrastive,
    attention_contrastive_loss,
    resolve_layer,
    supervised_contrastive_loss,
)
from spacy_fsner.training.objectives.base import first_tensor

torch.set_num_threads(1)

# (words, types): 1 = person, 2 = location
SENTENCES = [
    (["Barack", "Obama", "visited", "Paris", "and", "Berlin", "."], [1, 1, 0, 2, 0, 2, 0]),
    (["Angela", "Merkel", "met", "John", "Smith", "in", "Rome", "."], [1, 1, 0, 1, 1, 0, 2, 0]),
    (["London", "is", "far", "from", "Tokyo", "."], [2, 0, 0, 0, 2, 0]),
    (["Mary", "lives", "in", "Madrid", "."], [1, 0, 0, 2, 0]),
]
LABELS = {1: "person", 2: "location"}


def make_record(tokenizer, words: list[str], types: list[int], label_type: int) -> dict:
    """A pre-tokenized record following the dataset contract (prompt | sentence | answer, EOS)."""

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    ids = [tokenizer.bos_token_id] + encode("Extract")
    label_ids = encode(" " + LABELS[label_type])
    label_positions = list(range(len(ids), len(ids) + len(label_ids)))
    ids += label_ids + encode(" entities from:")
    token_types = [-1] * len(ids)
    word_spans = []
    for word, kind in zip(words, types, strict=True):
        piece = encode(" " + word)
        word_spans.append((len(ids), len(ids) + len(piece)))
        ids += piece
        token_types += [kind] * len(piece)
    # entities of the record's label: maximal runs of words of that type
    entity_spans, entities, start = [], [], None
    for i, kind in enumerate([*types, 0]):
        if kind == label_type and start is None:
            start = i
        elif kind != label_type and start is not None:
            entity_spans.append([word_spans[start][0], word_spans[i - 1][1]])
            entities.append(" ".join(words[start:i]))
            start = None
    ids += encode("\nAnswer:")
    token_types += [-1] * (len(ids) - len(token_types))
    completion = encode("".join(f" <<< {e} >>>" for e in entities) + " <im_end>") + [tokenizer.eos_token_id]
    completion_mask = [0] * len(ids) + [1] * len(completion)
    token_types += [-1] * len(completion)
    return {
        "input_ids": ids + completion,
        "completion_mask": completion_mask,
        "token_types": token_types,
        "label_positions": label_positions,
        "entity_spans": entity_spans,
        "label": LABELS[label_type],
    }


def make_records(tokenizer) -> list[dict]:
    return [make_record(tokenizer, w, t, k) for w, t in SENTENCES for k in LABELS]


def collate(records: list[dict], pad_id: int) -> ContrastiveBatch:
    """Right-padded tensors for calling the model and objectives directly (the trainer uses ContrastiveCollator)."""
    length = max(len(r["input_ids"]) for r in records)
    size = len(records)
    ids = torch.full((size, length), pad_id)
    mask = torch.zeros(size, length, dtype=torch.long)
    types = torch.full((size, length), -1)
    positions = torch.full((size, max(len(r["label_positions"]) for r in records)), -1)
    spans = torch.full((size, max(1, *(len(r["entity_spans"]) for r in records)), 2), -1)
    for i, r in enumerate(records):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        mask[i, :n] = 1
        types[i, :n] = torch.tensor(r["token_types"])
        positions[i, : len(r["label_positions"])] = torch.tensor(r["label_positions"])
        if r["entity_spans"]:
            spans[i, : len(r["entity_spans"])] = torch.tensor(r["entity_spans"])
    return ContrastiveBatch(ids, mask, types, positions, spans, [r["label"] for r in records])


def lora_model(model_dir: Path, seed: int = 0, dropout: float = 0.0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=dropout))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def batch(tokenizer) -> ContrastiveBatch:
    return collate(make_records(tokenizer), tokenizer.pad_token_id)


def objective_loss(objective, model, batch: ContrastiveBatch) -> torch.Tensor:
    objective.reset()
    model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    loss = objective.compute(batch)
    objective.reset()
    return loss


# --- layer resolution -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "num_layers", "index"),
    [(26 / 32, 32, 25), (0.8125, 32, 25), (1.0, 32, 31), (0.01, 32, 0), (0.5, 2, 0), (1.0, 2, 1), (0.8125, 2, 1)]
    + [(0, 2, 0), (-1, 2, 1), (-2, 2, 0), (25, 32, 25)],
)
def test_layer_resolves_as_documented(layer, num_layers, index):
    assert resolve_layer(layer, num_layers) == index


@pytest.mark.parametrize("layer", [2, -3, 0.0, 1.5, -0.25, float("nan"), True, "26"])
def test_bad_layer_is_a_clear_error(layer):
    with pytest.raises(ValueError, match="layer"):
        resolve_layer(layer, 2)


def test_bad_layer_on_attach_names_the_range(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match=r"2 decoder layers.*\[-2, 1\]"):
        HiddenStateContrastive(layer=2).attach(model)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        AttentionContrastive(layer=1.25).attach(model)


def test_registered_objectives_resolve_from_config():
    config = Config().from_str(
        """
        [hidden]
        @misc = "spacy_fsner.HiddenStateContrastive.v1"
        weight = 0.001
        layer = 0.8125
        noise = true

        [attention]
        @misc = "spacy_fsner.AttentionContrastive.v1"
        layer = -1

        [off]
        @misc = "spacy_fsner.HiddenStateContrastive.v1"
        contrastive = false
        """
    )
    resolved = registry.resolve(config)
    hidden, attention, off = resolved["hidden"], resolved["attention"], resolved["off"]
    assert isinstance(hidden, HiddenStateContrastive) and hidden.noise and hidden.enabled
    assert hidden.layer == 0.8125 and isinstance(hidden.layer, float) and hidden.weight == 0.001
    assert isinstance(attention, AttentionContrastive) and attention.layer == -1 and attention.weight == 0.01
    assert not off.enabled
    bad = Config().from_str('[x]\n@misc = "spacy_fsner.HiddenStateContrastive.v1"\ncontrastive = false\nnoise = true')
    with pytest.raises(ValueError, match="needs `contrastive=True`"):
        registry.resolve(bad)


# --- the loss formulas on hand-made inputs --------------------------------------------------------------------


def test_supervised_contrastive_loss_by_hand():
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    types = torch.tensor([1, 1, 0])
    # each anchor: positive the other entity (cos 1), negative the O token (cos 0), temperature 1
    expected = math.log(1 + math.exp(-1))
    assert supervised_contrastive_loss(features, types, 1.0).item() == pytest.approx(expected, abs=1e-6)
    # a noised view orthogonal to its anchor adds one positive with cos 0 per anchor
    views = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # one per anchor
    log_z = math.log(math.exp(1) + 2)
    expected = -((1 - log_z) + (0 - log_z)) / 2
    assert supervised_contrastive_loss(features, types, 1.0, views).item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="one row per anchor"):
        supervised_contrastive_loss(features, types, 1.0, torch.zeros(3, 2))
    # no anchor has a positive: zero, still differentiable
    lone = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = supervised_contrastive_loss(lone, torch.tensor([1, 0]), 0.1)
    assert loss.item() == 0.0 and loss.requires_grad


def test_supervised_contrastive_loss_prefers_clustered_types():
    torch.manual_seed(0)
    types = torch.tensor([1, 1, 1, 2, 2, 2, 0, 0, 0])
    centres = torch.eye(3)[types.clamp(max=2)]
    clustered = centres + 0.05 * torch.randn(9, 3)
    mixed = clustered[torch.tensor([0, 3, 6, 1, 4, 7, 2, 5, 8])]
    assert supervised_contrastive_loss(clustered, types, 0.1) < supervised_contrastive_loss(mixed, types, 0.1) - 1


def test_attention_loss_eq3_by_hand():
    # T = 5: [label, left neighbour, entity, right neighbour, prompt]; head_dim 2, 2 query heads, 1 key head
    queries = torch.zeros(1, 5, 4)
    queries[0, 0] = torch.tensor([1.0, 0.2, 1.0, -0.2])  # heads average to (1, 0)
    keys = torch.zeros(1, 5, 2)
    keys[0, 1] = torch.tensor([0.0, 1.0])  # cos 0 with the anchor
    keys[0, 2] = torch.tensor([3.0, 0.0])  # cos 1
    keys[0, 3] = torch.tensor([-1.0, 0.0])  # cos -1
    types = torch.tensor([[-1, 0, 1, 0, -1]])
    positions = torch.tensor([[0]])
    spans = torch.tensor([[[2, 3]]])
    loss = attention_contrastive_loss(queries, keys, 2, types, positions, spans)
    # Eq. 3: -log sigmoid(cos_pos - (cos_neg_left + cos_neg_right)) = -log sigmoid(1 - (0 - 1))
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-2))), abs=1e-6)
    # the right neighbour outside the sentence is skipped
    outside = torch.tensor([[-1, 0, 1, -1, -1]])
    loss = attention_contrastive_loss(queries, keys, 2, outside, positions, spans)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1))), abs=1e-6)
    # InfoNCE alternative: positive vs its two negatives, temperature 0.5
    loss = attention_contrastive_loss(queries, keys, 2, types, positions, spans, formula="infonce", temperature=0.5)
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-2)))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # a record without label positions but with entities is a data error
    with pytest.raises(ValueError, match="label_positions"):
        attention_contrastive_loss(queries, keys, 2, types, torch.tensor([[-1]]), spans)


# --- hooks on the tiny Llama ------------------------------------------------------------------------------------


def test_hooks_capture_lora_output_on_peft_model(tiny_model_dir, batch):
    model = lora_model(tiny_model_dir)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)  # a non-zero LoRA delta
    objective = AttentionContrastive(layer=-1)
    objective.attach(model)
    q_proj = model.get_base_model().model.layers[1].self_attn.q_proj
    base_out = {}
    handle = q_proj.base_layer.register_forward_hook(lambda m, a, o: base_out.setdefault("q", o))
    with torch.no_grad():
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        with_lora = objective._captures["q"]
        assert with_lora.shape == (*batch.input_ids.shape, 32)
        assert not torch.allclose(with_lora, base_out["q"], atol=1e-4)  # includes the LoRA delta
        objective.reset()
        base_out.clear()
        with model.disable_adapter():
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        assert torch.allclose(objective._captures["q"], base_out["q"])
        assert objective._captures["k"].shape == (*batch.input_ids.shape, 16)  # 2 KV heads x head_dim 8
    handle.remove()
    objective.detach()
    objective.reset()
    model(input_ids=batch.input_ids[:1])
    assert not objective._captures  # detached: nothing captured


@pytest.mark.parametrize("kind", ["hidden", "noise", "attention"])
def test_objective_gradient_stops_at_the_chosen_layer(tiny_model_dir, batch, kind):
    model = lora_model(tiny_model_dir)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)  # so lora_A gets gradient too
    objective = {
        "hidden": HiddenStateContrastive(layer=0),
        "noise": HiddenStateContrastive(layer=-2, noise=True, noise_grad=True),
        "attention": AttentionContrastive(layer=0.5),
    }[kind]
    objective.attach(model)
    assert objective.layer_index == 0
    objective_loss(objective, model, batch).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    below = [n for n, g in grads.items() if ".layers.0." in n and g is not None and g.abs().sum() > 0]
    above = [n for n, g in grads.items() if ".layers.1." in n and g is not None and g.abs().sum() > 0]
    assert above == []
    if kind == "attention":
        # Q and K of layer 0 get gradient; V, O and the MLP of layer 0 do not feed Eq. 3
        assert {n.split(".lora_")[0].split(".")[-1] for n in below} == {"q_proj", "k_proj"}
    else:
        assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= {
            n.split(".lora_")[0].split(".")[-1] for n in below
        }
    base = [n for n, p in model.named_parameters() if p.grad is not None and "lora_" not in n]
    assert base == []


def test_noise_pass_stops_after_the_chosen_layer(tiny_model_dir, batch):
    model = lora_model(tiny_model_dir)
    objective = HiddenStateContrastive(layer=0, noise=True)
    objective.attach(model)
    calls = []
    layers = model.get_base_model().model.layers
    handle = layers[1].register_forward_hook(lambda m, a, o: calls.append(1))
    loss = objective_loss(objective, model, batch)
    handle.remove()
    assert calls == [1]  # the main forward only: the noise pass never ran layer 1
    assert torch.isfinite(loss) and loss.requires_grad


def test_noise_view_is_an_extra_positive(tiny_model_dir, batch):
    model = lora_model(tiny_model_dir)
    plain, noised = HiddenStateContrastive(layer=0), HiddenStateContrastive(layer=0, noise=True)
    plain.attach(model)
    noised.attach(model)
    with torch.no_grad():
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        without, with_noise = plain.compute(batch), noised.compute(batch)
    # the noised twin is nearly identical to its anchor, so it is an easy positive: the loss drops
    assert with_noise < without
    hidden = plain._captures["hidden"]
    view = noised.noise_view(batch)  # every unpadded token
    real = batch.attention_mask.reshape(-1).bool()
    assert view.shape == (int(real.sum()), hidden.shape[2]) and not view.requires_grad
    assert not torch.allclose(view, hidden.reshape(-1, hidden.shape[2])[real])


def padded_noise_pass(objective: HiddenStateContrastive, model, batch: ContrastiveBatch) -> torch.Tensor:
    """Reference for `noise_view`: the whole padded batch with the same noise, through every layer ([B, T, d])."""
    generator_state = objective.generator.get_state()
    embeds = model.get_input_embeddings()(batch.input_ids)
    uniform = torch.rand(embeds.shape, generator=objective.generator) * 2 - 1
    objective.generator.set_state(generator_state)
    lengths = batch.attention_mask.sum(1).float()
    noised = embeds + uniform * (objective.noise_alpha / torch.sqrt(lengths * embeds.shape[-1]))[:, None, None]
    captured = []
    layer = model.get_base_model().model.layers[objective.layer_index]
    handle = layer.register_forward_hook(lambda m, a, o: captured.append(o[0] if isinstance(o, tuple) else o))
    with objective.paused():
        model(inputs_embeds=noised, attention_mask=batch.attention_mask, use_cache=False)
    handle.remove()
    return captured[0]


def test_noise_view_runs_only_what_the_sampled_tokens_need(tiny_model_dir, batch):
    """The sequences holding a sampled token, each cut after its own last one and packed into one row, give the
    values of the whole padded batch's pass."""
    model = lora_model(tiny_model_dir)
    objective = HiddenStateContrastive(layer=1, noise=True)
    objective.attach(model)
    length = batch.input_ids.shape[1]
    sentence = (batch.token_types[1:3] >= 0).nonzero()  # [row - 1, position] of the sentence tokens of rows 1, 2
    sentence = torch.cat([sentence[sentence[:, 0] == 0], sentence[sentence[:, 0] == 1][:3]])  # row 2: first 3 only
    rows = (sentence[:, 0] + 1) * length + sentence[:, 1]
    ends = [int(sentence[sentence[:, 0] == row, 1].max()) + 1 for row in (0, 1)]
    assert ends[1] < ends[0] < length
    seen = []
    layer = model.get_base_model().model.layers[0]
    handle = layer.register_forward_hook(
        lambda m, a, o: seen.append(tuple(o[0].shape[:2] if isinstance(o, tuple) else o.shape[:2]))
    )
    with torch.no_grad():
        expected = padded_noise_pass(objective, model, batch).reshape(-1, model.config.hidden_size)[rows]
        seen.clear()
        got = objective.noise_view(batch, rows)
    handle.remove()
    assert seen == [(1, sum(ends))]  # one packed row, each sequence up to its own last needed token, no padding
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # every unpadded token of the batch, packed the same way
        expected = padded_noise_pass(objective, model, batch).reshape(-1, model.config.hidden_size)
        got = objective.noise_view(batch)
    torch.testing.assert_close(got, expected[batch.attention_mask.reshape(-1).bool()], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cuts", [[(1, 1)], [(0, 1), (2, 1)], [(2, 5)]])
def test_noise_view_of_one_sequence_or_one_token_cuts(tiny_model_dir, batch, cuts):
    """(row, tokens) cuts: one kept sequence (no packing at all), and 1-token sequences packed side by side."""
    model = lora_model(tiny_model_dir)
    objective = HiddenStateContrastive(layer=1, noise=True)
    objective.attach(model)
    length = batch.input_ids.shape[1]
    rows = torch.tensor([row * length + end - 1 for row, end in cuts])
    with torch.no_grad():
        expected = padded_noise_pass(objective, model, batch).reshape(-1, model.config.hidden_size)[rows]
        got = objective.noise_view(batch, rows)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_noise_view_runs_without_dropout(tiny_model_dir, batch):
    """The view differs from its anchor by the embedding noise only: LoRA's dropout is off in the noise pass (the same
    noise gives the same view), and every module is back in its own mode afterwards."""
    model = lora_model(tiny_model_dir, dropout=0.5).train()
    with torch.no_grad():  # a trained adapter: LoRA's B starts at zero, and dropout before it would change nothing
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    model.get_base_model().lm_head.eval()  # a module in another mode than its parent keeps it
    objective = HiddenStateContrastive(layer=1, noise=True)
    objective.attach(model)
    modes = {name: module.training for name, module in model.named_modules()}
    state = objective.generator.get_state()
    with torch.no_grad():
        first = objective.noise_view(batch)
        objective.generator.set_state(state)
        second = objective.noise_view(batch)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert {name: module.training for name, module in model.named_modules()} == modes


def test_noise_view_needs_right_padding(tiny_model_dir, batch):
    model = lora_model(tiny_model_dir)
    objective = HiddenStateContrastive(layer=1, noise=True)
    objective.attach(model)
    left_padded = dataclasses.replace(batch, attention_mask=batch.attention_mask.flip(1))
    row = int(batch.attention_mask.sum(1).argmin())  # the most padded row
    assert not bool(batch.attention_mask[row].all())
    rows = torch.tensor([(row + 1) * batch.input_ids.shape[1] - 1])  # its last position: padding before it now
    with pytest.raises(ValueError, match="right-padded"):
        objective.noise_view(left_padded, rows)


def test_noise_view_of_a_batch_without_entities(tiny_model_dir, batch):
    """No anchor, no view needed, and the loss is zero; yet the noise pass runs (over one token): on a sharded model
    every process must run the same layers, whether or not its micro-batch holds an entity."""
    model = lora_model(tiny_model_dir)
    objective = HiddenStateContrastive(layer=1, noise=True)
    objective.attach(model)
    no_entities = dataclasses.replace(batch, token_types=batch.token_types.clamp(max=0))
    shapes = []
    layer = model.get_base_model().model.layers[1]
    handle = layer.register_forward_hook(lambda m, a, o: shapes.append(tuple(first_tensor(o).shape[:2])))
    loss = objective_loss(objective, model, no_entities)
    handle.remove()
    assert loss.item() == 0.0 and loss.requires_grad
    assert shapes == [tuple(batch.input_ids.shape), (1, 1)]  # the main forward, then the noise pass over 1 token
    assert objective.noise_view(no_entities, torch.empty(0, dtype=torch.long)).shape == (0, model.config.hidden_size)


def test_noise_pass_through_a_sharded_model_runs_it_whole_for_the_same_view(tiny_model_dir, batch):
    """With `sharded_model` (the trainer's FSDP or DeepSpeed wrapper) the pass is that model's own call, every layer
    and the LM head at one position, not the layers up to the chosen one: the same view."""
    model = lora_model(tiny_model_dir)
    objective = HiddenStateContrastive(layer=0, noise=True)
    objective.attach(model)
    calls = []
    handle = model.get_base_model().model.layers[1].register_forward_hook(lambda m, a, o: calls.append(1))
    state = objective.generator.get_state()
    with torch.no_grad():
        stopped = objective.noise_view(batch)
        objective.generator.set_state(state)
        objective.sharded_model = model
        whole = objective.noise_view(batch)
    handle.remove()
    assert calls == [1]  # layer 1 ran in the sharded pass only
    torch.testing.assert_close(whole, stopped, rtol=1e-5, atol=1e-6)


def test_draws_are_seeded_by_the_trainers_batch_index(batch):
    """The same micro-batch number draws the same noise and negatives, on whichever process it is trained; without
    a number, the objective's running generator."""
    objective = HiddenStateContrastive(seed=3, max_negatives=4)
    objective.batch_index = 5
    first = objective.sample_tokens(batch.token_types)
    assert torch.equal(objective.sample_tokens(batch.token_types), first)
    assert torch.equal(torch.rand(4, generator=objective.random()), torch.rand(4, generator=objective.random()))
    objective.batch_index = 6
    assert not torch.equal(objective.sample_tokens(batch.token_types), first)
    objective.batch_index = None
    assert objective.random() is objective.generator


def test_activation_checkpointing_keeps_the_first_capture(tiny_model_dir, batch):
    grads, values = [], []
    for checkpointing in (False, True):
        model = lora_model(tiny_model_dir)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, generator=torch.Generator().manual_seed(0), std=0.1)
        model.train()
        if checkpointing:
            model.get_base_model().activation_checkpointing_enable()  # non-reentrant, transformers' default
        objectives = [HiddenStateContrastive(layer=0), AttentionContrastive(layer=0)]
        for objective in objectives:
            objective.attach(model)
            objective.reset()
        fired = []
        q_proj = model.get_base_model().model.layers[0].self_attn.q_proj
        handle = q_proj.register_forward_hook(lambda m, a, o, fired=fired: fired.append(o.detach().clone()))
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        loss = sum(objective.compute(batch) for objective in objectives) + out.logits[..., 0].mean()
        loss.backward()
        handle.remove()
        # the recompute during backward runs q_proj (inside the checkpointed layer) again: its hooks fire twice
        assert len(fired) == (2 if checkpointing else 1)
        values.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert values[0] == pytest.approx(values[1], abs=1e-6)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_missing_capture_and_no_gradient_are_clear_errors(tiny_model_dir, batch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    objective = HiddenStateContrastive(layer=0)
    objective.attach(model)
    with pytest.raises(RuntimeError, match="nothing captured"):
        objective.compute(batch)
    model.requires_grad_(False)
    model.train()
    objective.reset()
    model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    with pytest.raises(RuntimeError, match="carries no gradient"):
        objective.compute(batch)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hidden", "noise", "attention"])
def test_each_objective_falls_over_30_steps(tiny_model_dir, batch, kind):
    model = lora_model(tiny_model_dir, seed=1)
    model.train()
    objective = {
        "hidden": HiddenStateContrastive(layer=-1, seed=0),
        "noise": HiddenStateContrastive(layer=-1, noise=True, noise_alpha=5.0, seed=0),
        "attention": AttentionContrastive(layer=-1),
    }[kind]
    objective.attach(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = objective_loss(objective, model, batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert sum(losses[-5:]) < sum(losses[:5])


def test_registered_constructors_default_to_the_classes_defaults():
    from spacy_fsner.training.objectives import attention_contrastive_v1, hidden_state_contrastive_v1

    for registered, cls in (
        (hidden_state_contrastive_v1, HiddenStateContrastive),
        (attention_contrastive_v1, AttentionContrastive),
    ):
        built, plain = registered(), cls()
        state = {key: value for key, value in vars(plain).items() if key != "generator"}
        assert state and {key: vars(built)[key] for key in state} == state
        assert built.layer == 0.8125 and built.enabled
