"""What a model run costs on its device, for the throughput benchmark (`throughput.py`): peak memory while it runs,
the roofline bound of its forward passes, and the loaded model's shape and size in words."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass


class PeakMemory:
    """Peak memory above the level at the start: CUDA allocator peak on a GPU, else sampled process RSS."""

    def __init__(self, device_type: str) -> None:
        import psutil
        import torch

        self.torch, self.cuda = torch, device_type == "cuda"
        self.process = psutil.Process()
        self.peak = self.start = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
            self.start = self.torch.cuda.memory_allocated()
        else:
            self.start = self.peak = self.process.memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.peak = self.torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def describe_model(model, name: str) -> str:
    """`name` with the architecture, depth, width and parameter count of the loaded model."""
    config = model.config
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    return (
        f"{name} ({type(model).__name__}, {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"{millions:.0f}M parameters)"
    )


@dataclass
class Roofline:
    """The fastest a run's forward passes could go on a device: each pass reads every weight once (memory), each
    real token (prompt or generated; pads excluded) costs 2 FLOPs per weight it meets (compute); the bound is the
    larger of the two. Attention over the cache is left out, so the bound is lower still than the truth."""

    weight_bytes: int
    body_flops: int
    """2 x the parameters every token goes through (not the embedding table, not the LM head)."""
    head_flops: int
    """2 x the LM head's parameters: only generated tokens need logits."""
    peak_flops: float
    bandwidth: float

    @classmethod
    def of(cls, model, peak_tflops: float, peak_tbps: float) -> Roofline:
        params = list(model.parameters())  # a tied embedding is one parameter, listed once
        weight_bytes = sum(p.numel() * p.element_size() for p in params)
        embedding = model.get_input_embeddings().weight.numel()
        head = model.get_output_embeddings().weight.numel()
        tied = model.get_input_embeddings().weight is model.get_output_embeddings().weight
        body = sum(p.numel() for p in params) - embedding - (0 if tied else head)
        return cls(weight_bytes, 2 * body, 2 * head, peak_tflops * 1e12, peak_tbps * 1e12)

    def seconds(self, counts: Counter) -> float:
        generated = counts["decode_tokens"]
        flops = self.body_flops * (counts["prompt_tokens"] + generated) + self.head_flops * generated
        return max(counts["forward_passes"] * self.weight_bytes / self.bandwidth, flops / self.peak_flops)

    def __str__(self) -> str:
        return (
            f"{self.weight_bytes / 1e9:.2f} GB of weights read per forward pass at {self.bandwidth / 1e12:.2f} TB/s, "
            f"{self.body_flops / 2e6:,.0f}M parameters per token (LM head {self.head_flops / 2e6:,.0f}M) "
            f"at {self.peak_flops / 1e12:.0f} TFLOP/s"
        )
