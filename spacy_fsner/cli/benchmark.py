"""`python -m spacy_fsner benchmark`: `nlp.pipe` against the naive loop, in one run, on the same model and data.

The naive loop is what a hand-rolled script does: one `model.generate` call per (sentence, label), no batching,
no reuse of the shared prompt prefix (same constraint, same greedy decoding). Both must give the same entities.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import typer

from ._app import app

LABELS = {
    "PER": "the name of a specific person",
    "LOC": "the name of a specific place, such as a country, city or river",
    "ORG": "the name of a specific organisation, company, team or institution",
    "MISC": "a named nationality, event, work or other proper name that is not a person, place or organisation",
}


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


def _timed(run: Callable[[], list], device_type: str) -> tuple[list, float, float]:
    with PeakMemory(device_type) as memory:
        start = time.perf_counter()
        docs = run()
        seconds = time.perf_counter() - start
    return docs, seconds, memory.mib


def describe_model(model, name: str) -> str:
    """`name` with the architecture, depth, width and parameter count of the loaded model."""
    config = model.config
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    return (
        f"{name} ({type(model).__name__}, {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"{millions:.0f}M parameters)"
    )


@app.command("benchmark")
def benchmark(
    data: Path = typer.Option(Path("../shared/data/conll2003/eng.testb"), help="CoNLL file to take sentences from."),
    sentences: int = typer.Option(200, help="Number of sentences."),
    model: str | None = typer.Option(
        None, help="Model directory, fetch-model name or hub id (default: build a random 4-layer, hidden-256 Llama)."
    ),
    layers: int = typer.Option(4, help="Layers of the tiny model."),
    hidden_size: int = typer.Option(256, help="Hidden size of the tiny model."),
    batch_size: int = typer.Option(64, help="Prompts per forward pass in the fast path."),
    max_new_tokens: int = typer.Option(32, help="Generation budget per prompt (both paths)."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    dtype: str = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, ..."),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)."),
) -> None:
    """Throughput, model tokens per sentence and peak memory of `nlp.pipe` vs. the naive generate loop."""
    import spacy
    import torch

    from ..data.readers import read_docs
    from ..models.tiny import TinyModelSpec, build_tiny_model, read_corpus
    from ..pipeline.task import DocGenerations

    if threads:
        torch.set_num_threads(threads)

    texts = [doc.text for doc in read_docs(data, spacy.blank("en").vocab)][:sentences]
    if len(texts) < sentences:
        raise typer.BadParameter(f"{data} has only {len(texts)} sentences; pass --sentences {len(texts)} or less.")
    random_model = None
    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            random_model = f"random {layers}-layer hidden-{hidden_size} Llama"
            spec = TinyModelSpec(
                hidden_size, layers, num_heads=8, num_kv_heads=4, intermediate_size=4 * hidden_size, vocab_size=4096
            )
            model = str(build_tiny_model(Path(tmp), read_corpus(None) + texts, spec))
        nlp = spacy.blank("en")
        component = nlp.add_pipe(
            "fsner",
            config={
                "labels": list(LABELS),
                "label_definitions": LABELS,
                "model": {
                    "@llm_models": "spacy_fsner.CausalLM.v1",
                    "name": str(model),
                    "batch_size": batch_size,
                    "max_new_tokens": max_new_tokens,
                    "device": device,
                    "dtype": dtype,
                },
            },
        )
        generator = component.model.generator
        device_type = generator.model.device.type
        described = describe_model(generator.model, model if random_model is None else random_model)
        nlp("Warm-up sentence .")

        def naive() -> list:
            docs = []
            for doc in map(nlp.make_doc, texts):
                (prompts,) = component.task.generate_prompts([doc])
                generations = [generator.generate_naive(request) for request in prompts.requests]
                docs.append(component.task.annotate(doc, DocGenerations(prompts, generations)))
            return docs

        def fast() -> list:
            return list(nlp.pipe(texts, batch_size=len(texts)))

        rows = []
        for name, run in (
            ("naive loop (generate per sentence x label)", naive),
            ("nlp.pipe (batched + prefix KV cache)", fast),
        ):
            generator.counts.clear()
            docs, seconds, mib = _timed(run, device_type)
            tokens = sum(generator.counts.values()) / len(texts)
            rows.append((name, len(texts) / seconds, tokens, mib, docs))
    same = [[(e.start, e.end, e.label_) for e in d.ents] for d in rows[0][4]] == [
        [(e.start, e.end, e.label_) for e in d.ents] for d in rows[1][4]
    ]
    n_ents = sum(len(d.ents) for d in rows[1][4])
    typer.echo(
        f"\n{len(texts)} sentences x {len(LABELS)} labels, {described}, "
        f"{device_type}, {torch.get_num_threads()} threads, max_new_tokens={max_new_tokens}\n"
    )
    typer.echo("| path | sentences/s | model tokens/sentence | peak memory (MiB) |")
    typer.echo("|---|---:|---:|---:|")
    for name, speed, tokens, mib, _ in rows:
        typer.echo(f"| {name} | {speed:.2f} | {tokens:.1f} | {mib:.1f} |")
    typer.echo(f"\nspeed-up: {rows[1][1] / rows[0][1]:.2f}x; same entities in both paths: {same} ({n_ents} entities)")
    if not same:
        raise typer.Exit(1)
