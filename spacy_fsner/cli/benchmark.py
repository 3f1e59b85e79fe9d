"""`python -m spacy_fsner benchmark`: `nlp.pipe` against the naive loop, in one run, on the same model and data.

The machinery is `spacy_fsner.evaluation.throughput`; this command parses the options, runs it and prints its tables
(exit code 1 when the two paths disagree on some entities).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..evaluation.throughput import TEMPLATES, BenchmarkError, entity_records, format_tables, run_benchmark
from ._app import app


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
    adapter: str | None = typer.Option(
        None,
        help="A LoRA adapter on the model, a directory (`train`'s DIR/adapter) or a shipped adapter's name "
        "(fsner-base-smollm2): a trained pipeline's speed.",
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
    entities: Path | None = typer.Option(
        None,
        help="Also write the entities of every run to this JSON file: one object per (template, labels, path), "
        'in run order, {"template", "labels", "path", "ents": [[[start, end, label], ...] per sentence]}.',
    ),
) -> None:
    """Throughput, tokens per sentence against the lower bound, pad share and peak memory of `nlp.pipe` vs. the
    naive generate loop, for each template and label count."""
    counts = [int(n) for n in labels.split(",")]
    try:
        result = run_benchmark(
            data,
            sentences=sentences,
            naive_sentences=naive_sentences,
            pool=pool,
            label_counts=counts,
            extra_labels=extra_labels.split(","),
            templates=[t.strip() for t in templates.split(",")],
            shots=shots,
            model=model,
            adapter=adapter,
            short_labels=short_labels,
            batch_size=batch_size,
            batch_tokens=batch_tokens,
            max_new_tokens=max_new_tokens,
            device=device,
            dtype=dtype,
            threads=threads,
            peak_tflops=peak_tflops,
            peak_tbps=peak_tbps,
        )
    except BenchmarkError as error:
        raise typer.BadParameter(str(error)) from None
    if entities is not None:
        entities.parent.mkdir(parents=True, exist_ok=True)
        entities.write_text(json.dumps(entity_records(result)) + "\n")
    typer.echo(format_tables(result))
    if not result.same:
        typer.echo("the two paths disagree on some entities", err=True)
        raise typer.Exit(1)
