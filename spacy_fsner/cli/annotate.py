"""`python -m spacy_fsner annotate`: a corpus through a saved pipeline into resumable shards, here or on Ray."""

from pathlib import Path

import typer

from ._app import app, fail, reported


@app.command("annotate")
def annotate_command(
    pipeline: str = typer.Argument(..., help="saved spaCy pipeline directory (e.g. with fsner), or a package name"),
    input_path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help='.jsonl (an object per line with "text") or .txt (a document per line)'
    ),
    output: Path = typer.Argument(..., file_okay=False, help="directory for the shards (new, or a run's to resume)"),
    output_format: str = typer.Option("spacy", "--format", help="spacy (DocBin shards) or jsonl"),
    shard_size: int = typer.Option(1000, "--shard-size", help="documents per shard file"),
    batch_size: int = typer.Option(32, "--batch-size", help="docs per nlp.pipe batch"),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="run on Ray: 'local' (start Ray on this machine), 'auto' (the cluster this machine is in) or an "
        "address (ray://HEAD:10001); without it, annotate in this process",
    ),
    workers: int | None = typer.Option(None, "--workers", help="with --ray-address: actors holding the pipeline (1)"),
    cpus_per_worker: float | None = typer.Option(None, "--cpus-per-worker", help="with --ray-address: CPUs (1)"),
    gpus_per_worker: float | None = typer.Option(
        None, "--gpus-per-worker", help="with --ray-address: GPUs per actor (0; 0.5 puts two actors on a GPU)"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="a progress bar over the documents"),
) -> None:
    """Annotate every document of INPUT_PATH with PIPELINE into numbered shards in OUTPUT (DocBin or JSONL, in input
    order); run it again after a stop and it resumes, skipping the shards already written."""
    from ..annotation import RaySettings, RayWorkerError, annotate

    ray_options = {"workers": workers, "cpus_per_worker": cpus_per_worker, "gpus_per_worker": gpus_per_worker}
    given = {name: value for name, value in ray_options.items() if value is not None}
    if ray_address is None and given:
        options = ", ".join(f"--{name.replace('_', '-')}" for name in given)
        fail(f"{options} need --ray-address (local starts Ray on this machine); without it annotate runs here")
    with reported(ValueError, OSError, ImportError, RayWorkerError):
        ray = None if ray_address is None else RaySettings(ray_address, **given)
        run = annotate(
            pipeline,
            input_path,
            output,
            output_format=output_format,
            shard_size=shard_size,
            batch_size=batch_size,
            ray=ray,
            progress=progress,
        )
    where = "" if ray is None else f" on Ray ({ray.address}, {ray.workers} workers)"
    earlier = f", {run.skipped} written before" if run.skipped else ""
    typer.echo(f"{run.n_docs} docs in {run.n_shards} shards in {run.output}: {run.written} written now{where}{earlier}")
