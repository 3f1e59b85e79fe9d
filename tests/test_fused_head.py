"""`score_labelled_positions`: TRL's fused LM head scores only the labelled positions on a CPU too, with the same
loss and gradients as scoring every position."""

from __future__ import annotations

import torch
import trl.trainer.utils as trl_utils
from test_objectives import lora_model

from spacy_fsner.training.fused_head import score_labelled_positions


def _loss_and_grads(model, ids, labels):
    model.zero_grad()
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_scoring_labelled_positions_only_gives_the_same_loss_and_gradients(tiny_model_dir, monkeypatch) -> None:
    model = lora_model(tiny_model_dir)
    trl_utils.add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy", "is_top1"))
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (3, 20))
    labels = ids.clone()
    labels[:, :15] = -100
    labels[2, :] = -100  # a row without a label: a zero, not an error
    monkeypatch.setattr(trl_utils, "_use_triton", lambda device: False)  # TRL's choice on a CPU: every position
    every_loss, every_grads = _loss_and_grads(model, ids, labels)
    assert score_labelled_positions()
    assert trl_utils._use_triton(torch.device("cpu"))
    loss, grads = _loss_and_grads(model, ids, labels)
    torch.testing.assert_close(loss, every_loss)
    assert grads.keys() == every_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], every_grads[name], rtol=1e-4, atol=1e-6)
