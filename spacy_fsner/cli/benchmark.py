"""`python -m spacy_fsner benchmark`: `nlp.pipe` against the naive loop, in one run, on the same model and data.

What users run: a real model (SmolLM2 unless `--model` says otherwise), prompts with demonstrations so that
entities are written, few labels and many. For each template and label count, the naive loop (what a hand-rolled
script does: one `model.generate` call per (sentence, label), no batching, no reuse of shared prompt parts; same
constraint, same greedy decoding) runs beside `nlp.pipe`, and both must give the same entities. Tokens processed
are set against a lower bound: each distinct prompt part once (`prompt_tree_tokens`) plus each generated token fed
back.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import typer

from ..ty import DocGenerations
from ._app import app

TEMPLATES = {"cllmfs": "spacy_fsner.CLLMFSTemplate.v1", "shared": "spacy_fsner.SharedInputTemplate.v1"}


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
class Run:
    """One path over one sentence set: speed, tokens per sentence and what it predicted."""

    seconds: float
    sentences: int
    counts: Counter
    mib: float
    ents: list[list[tuple[int, int, str]]]

    @property
    def per_sentence(self) -> float:
        return self.seconds / self.sentences

    def tokens(self, key: str | None = None) -> float:
        keys = ("prompt_tokens", "pad_tokens", "decode_tokens") if key is None else (key,)
        return sum(self.counts[k] for k in keys) / self.sentences


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


def short_label(label: str) -> str:
    """Few-NERD's fine type without its coarse type (`person-athlete` -> `athlete`, `organization-government/
    governmentagency` -> `government`; `location-other` -> `location`): label names of 1-3 tokens, as OntoNotes'."""
    coarse, _, fine = label.partition("-")
    return coarse if not fine or fine == "other" else fine.split("/")[0]


def with_short_labels(docs: list) -> list:
    """`docs` with every entity renamed by `short_label` (in place; returned for chaining)."""
    from spacy.tokens import Span

    for doc in docs:
        doc.ents = [Span(doc, e.start, e.end, label=short_label(e.label_)) for e in doc.ents]
    return docs


def pick_labels(docs, n: int) -> list[str]:
    """The `n` most frequent entity types of `docs` (ties by name)."""
    frequency = Counter(e.label_ for doc in docs for e in doc.ents)
    return [label for label, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))][:n]


def pick_demonstrations(docs, labels: list[str], shots: int) -> list:
    """`shots` docs chosen greedily to show entities of as many of `labels` as possible (short docs first)."""
    chosen, covered = [], set()
    pool = sorted(docs, key=len)
    for _ in range(shots):
        best = max(pool, key=lambda d: (len({e.label_ for e in d.ents if e.label_ in labels} - covered), -len(d)))
        chosen.append(best)
        covered |= {e.label_ for e in best.ents}
        pool.remove(best)
    return chosen


def _timed(run: Callable[[], list], device_type: str) -> tuple[list, float, float]:
    with PeakMemory(device_type) as memory:
        start = time.perf_counter()
        docs = run()
        seconds = time.perf_counter() - start
    return docs, seconds, memory.mib


def naive_loop(nlp, texts: list[str]) -> list:
    """What a hand-rolled script does: one `model.generate` call per (sentence, label)."""
    component = nlp.get_pipe("fsner")
    generator = component.model.generator
    out = []
    for doc in map(nlp.make_doc, texts):
        (prompts,) = component.task.generate_prompts([doc])
        generations = [generator.generate_naive(request) for request in prompts.requests]
        out.append(component.task.annotate(doc, DocGenerations(prompts, generations)))
    return out


def fast_path(nlp, texts: list[str]) -> list:
    return list(nlp.pipe(texts, batch_size=len(texts)))


def _ents(docs) -> list[list[tuple[int, int, str]]]:
    return [[(e.start, e.end, e.label_) for e in doc.ents] for doc in docs]


@app.command("benchmark")
def benchmark(
    data: Path = typer.Option(
        Path("../shared/data/fewnerd/inter_sentences/test-inter.txt"),
        help="Annotated sentences (any format `evaluate` reads): labels and demonstrations come from its first "
        "--pool sentences, the benchmarked sentences follow them.",
    ),
    sentences: int = typer.Option(40, help="Sentences through nlp.pipe."),
    naive_sentences: int = typer.Option(8, help="The first N of them also through the naive loop (it is slow)."),
    pool: int = typer.Option(2000, help="Sentences that supply the label set and the demonstrations."),
    labels: str = typer.Option("4,18", help="Label counts to run: the most frequent types of the pool (comma list)."),
    extra_labels: str = typer.Option(
        "person-politician",
        help="Labels to ask for after the pool's types when more labels are asked for than it has (comma list; "
        "Few-NERD INTER's test sentences have 17 types, its training types are unlabelled there).",
    ),
    templates: str = typer.Option("cllmfs,shared", help=f"Templates to run (comma list of {', '.join(TEMPLATES)})."),
    shots: int = typer.Option(2, help="Demonstrations in every prompt."),
    model: str = typer.Option(
        "smollm2-135m-instruct", help="Model directory, fetch-model name or hub id; 'tiny': a random 4-layer Llama."
    ),
    adapter: Path | None = typer.Option(
        None, help="A LoRA adapter directory (`train`'s DIR/adapter) on the model: a trained pipeline's speed."
    ),
    short_labels: bool = typer.Option(
        False, help="Rename Few-NERD types to their fine part (person-athlete -> athlete; --extra-labels too)."
    ),
    batch_size: int = typer.Option(0, help="Rows decoded together in the fast path (0: by device, 256 CPU / 512 GPU)."),
    batch_tokens: int = typer.Option(
        0, help="Tokens per prefill forward pass in the fast path (0: by device, 8192 CPU / 16384 GPU)."
    ),
    max_new_tokens: int = typer.Option(32, help="Generation budget per prompt (both paths)."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    dtype: str = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, ..."),
    threads: int = typer.Option(2, help="CPU threads for torch (0: torch's default)."),
    peak_tflops: float = typer.Option(
        0.0,
        help="The device's peak matrix TFLOP/s in --dtype (H200/H100 bf16: 989 dense); with --peak-tbps, a "
        "roofline column is printed.",
    ),
    peak_tbps: float = typer.Option(0.0, help="The device's memory bandwidth in TB/s (H200: 4.8, H100 SXM: 3.35)."),
) -> None:
    """Throughput, tokens per sentence against the lower bound, pad share and peak memory of `nlp.pipe` vs. the
    naive generate loop, for each template and label count."""
    import spacy
    import torch

    from ..data.readers import read_corpus as read_gold_docs
    from ..decoding.prefix_tree import prompt_tree_tokens
    from ..models.tiny import TinyModelSpec, build_tiny_model, tokenizer_texts

    if threads:
        torch.set_num_threads(threads)
    counts = [int(n) for n in labels.split(",")]
    names = [t.strip() for t in templates.split(",")]
    unknown = [t for t in names if t not in TEMPLATES]
    if unknown:
        raise typer.BadParameter(f"unknown templates {unknown}; use {list(TEMPLATES)}")
    docs = read_gold_docs(data, spacy.blank("en"))
    if short_labels:
        with_short_labels(docs)
        extra_labels = ",".join(short_label(label) for label in extra_labels.split(",") if label)
    if len(docs) < pool + sentences:
        raise typer.BadParameter(
            f"{data} has {len(docs)} sentences: fewer than --pool {pool} + --sentences {sentences}"
        )
    pool_docs, texts = docs[:pool], [d.text for d in docs[pool : pool + sentences]]
    naive_texts = texts[: min(naive_sentences, sentences)]
    available = pick_labels(pool_docs, max(counts))
    available += [label for label in extra_labels.split(",") if label and label not in available]

    with tempfile.TemporaryDirectory() as tmp:
        name = model
        if model == "tiny":
            spec = TinyModelSpec(256, 4, num_heads=8, num_kv_heads=4, intermediate_size=1024, vocab_size=4096)
            model = str(build_tiny_model(Path(tmp), tokenizer_texts(None) + texts, spec))
            name = "random 4-layer hidden-256 Llama"
        if adapter:
            name += f" + LoRA adapter {adapter}"
        settings = {
            "@llm_models": "spacy_fsner.CausalLM.v1",
            "name": model,
            "adapter": str(adapter) if adapter else None,
            "batch_size": batch_size or None,
            "batch_tokens": batch_tokens or None,
            "max_new_tokens": max_new_tokens,
            "device": device,
            "dtype": dtype,
        }
        pipelines, loaded = {}, None
        for template_name in names:  # one pipeline per template, all on one copy of the model
            nlp = spacy.blank("en")
            config = {"labels": available[:1], "template": {"@misc": TEMPLATES[template_name]}, "model": settings}
            component = nlp.add_pipe("fsner", config=config)
            if loaded is None:
                loaded = component.model.loaded_model
            else:
                component.model.attach_model(loaded)
            pipelines[template_name] = nlp
        generator = pipelines[names[0]].get_pipe("fsner").model.generator
        device_type = generator.model.device.type
        described = describe_model(generator.model, name)
        roofline = Roofline.of(generator.model, peak_tflops, peak_tbps) if peak_tflops and peak_tbps else None
        table = []
        for template_name in names:
            nlp = pipelines[template_name]
            component = nlp.get_pipe("fsner")
            generator = component.model.generator
            for n in counts:
                chosen = available[:n]
                if len(chosen) < n:
                    raise typer.BadParameter(f"the pool has only {len(available)} entity types; lower --labels")
                component.task.set_labels(chosen)
                component.task.set_demonstrations(pick_demonstrations(pool_docs, chosen, shots))
                nlp("Warm-up sentence .")

                runs = {}
                for path, run, count in (
                    ("naive", partial(naive_loop, nlp, naive_texts), len(naive_texts)),
                    ("pipe", partial(fast_path, nlp, texts), len(texts)),
                ):
                    generator.counts.clear()
                    out, seconds, mib = _timed(run, device_type)
                    runs[path] = Run(seconds, count, Counter(generator.counts), mib, _ents(out))
                requests = [r for p in component.task.generate_prompts(map(nlp.make_doc, texts)) for r in p.requests]
                bound = (prompt_tree_tokens(generator, requests) + runs["pipe"].counts["decode_tokens"]) / len(texts)
                same = runs["naive"].ents == runs["pipe"].ents[: len(naive_texts)]
                table.append((template_name, n, runs, bound, same))

    typer.echo(
        f"\n{len(texts)} sentences of {data} (naive loop: the first {len(naive_texts)}), {shots} demonstrations, "
        f"{described}, {device_type}, {torch.get_num_threads()} threads, max_new_tokens={max_new_tokens}, "
        f"batch_size={generator.config.batch_size}, batch_tokens={generator.config.batch_tokens}\n"
    )
    extra = " roofline s/sentence | x roofline |" if roofline else ""
    typer.echo(
        "| template | labels | path | sentences/s | s/sentence | tokens/sentence | x bound | pad share | "
        f"peak MiB | entities |{extra}"
    )
    typer.echo("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * bool(roofline))
    for template_name, n, runs, bound, _ in table:
        for path, run in runs.items():
            tokens = run.tokens()
            line = (
                f"| {template_name} | {n} | {path} | {1 / run.per_sentence:.2f} | {run.per_sentence:.3f} | "
                f"{tokens:.1f} | {tokens / bound:.2f} | {run.tokens('pad_tokens') / tokens:.1%} | {run.mib:.0f} | "
                f"{sum(map(len, run.ents))} |"
            )
            if roofline:
                floor = roofline.seconds(run.counts) / run.sentences
                line += f" {floor:.4f} | {run.per_sentence / floor:.1f} |"
            typer.echo(line)
    if roofline:
        typer.echo(f"\nroofline: {roofline}")
    typer.echo("\n| template | labels | lower bound tokens/sentence | speed-up pipe/naive | same entities |")
    typer.echo("|---|---:|---:|---:|---|")
    for template_name, n, runs, bound, same in table:
        speedup = runs["naive"].per_sentence / runs["pipe"].per_sentence
        typer.echo(f"| {template_name} | {n} | {bound:.1f} | {speedup:.2f}x | {same} |")
    if len(counts) > 1:
        few, many = min(counts), max(counts)
        typer.echo(f"\nnlp.pipe seconds per sentence, {many} labels / {few} labels:")
        for template_name in names:
            per = {n: runs["pipe"].per_sentence for t, n, runs, _, _ in table if t == template_name}
            typer.echo(f"- {template_name}: {per[many] / per[few]:.2f}x")
    if not all(same for *_, same in table):
        typer.echo("the two paths disagree on some entities", err=True)
        raise typer.Exit(1)
