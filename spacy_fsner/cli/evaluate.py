"""`python -m spacy_fsner evaluate`: score a pipeline on a corpus or on Few-NERD episodes, to JSON and Markdown."""

from pathlib import Path

import typer

from ._app import app, fail, reported

FINE_TUNE_OBJECTIVES = {
    "attention": {"cl_attention": {"@misc": "spacy_fsner.AttentionContrastive.v1"}},
    "hidden": {"cl_hidden": {"@misc": "spacy_fsner.HiddenStateContrastive.v1"}},
    "hidden-noise": {"cl_hidden": {"@misc": "spacy_fsner.HiddenStateContrastive.v1", "noise": True}},
}
"""`--fine-tune-objective`: the contrastive term added to the per-episode fine-tuning (OBP-LLM's, CLLMFS's)."""

RETRIEVERS = {
    "word": "spacy_fsner.WordRetriever.v1",
    "sentence": "spacy_fsner.SentenceRetriever.v1",
    "span": "spacy_fsner.SpanRetriever.v1",
    "random": "spacy_fsner.RandomRetriever.v1",
}


@app.command("evaluate")
def evaluate_command(
    pipeline: Path = typer.Argument(..., exists=True, file_okay=False, help="saved spaCy pipeline directory"),
    data: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="gold data: .spacy DocBin, CoNLL, token-tag or episode JSONL file"
    ),
    protocol: str = typer.Option(
        "auto",
        "--protocol",
        help="corpus: tag every sentence; fewnerd or hou: adapt to each episode and report that protocol first "
        "(both are computed); auto: fewnerd for an episode file, else corpus",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", dir_okay=False, help="JSON file for the scores and the settings"
    ),
    component: str | None = typer.Option(
        None, "--component", help="episodes: the component to adapt (default: 'fsner', or the only one with adapt)"
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="docs per nlp.pipe batch"),
    limit: int = typer.Option(0, "--limit", help="only the first N docs or episodes (0: all)"),
    data_format: str = typer.Option("auto", "--format", help="auto, conll, tagged or episodes (not for .spacy)"),
    scheme: str = typer.Option("auto", "--scheme", help="tag scheme of the data (see `convert`)"),
    fine_tune_steps: int = typer.Option(
        0,
        "--fine-tune-steps",
        help="episodes: train a LoRA adapter on each episode's support set for this many steps "
        "(spacy_fsner.FineTuneAdaptation.v1) instead of in-prompt demonstrations (0)",
    ),
    fine_tune_objective: str | None = typer.Option(
        None,
        "--fine-tune-objective",
        help="with --fine-tune-steps: add a contrastive objective to the episode's training: attention (OBP-LLM) "
        "hidden (CLLMFS) or hidden-noise (CLLMFS with its noised second view)",
    ),
    retriever: str | None = typer.Option(
        None,
        "--retriever",
        help="retrieve demonstrations per sentence from the support set (episodes) or the pipeline's pool: "
        f"{', '.join(RETRIEVERS)} (default: the pipeline's own setting)",
    ),
    k: int = typer.Option(3, "--k", help="with --retriever: demonstrations per prompt"),
    embeddings: str = typer.Option(
        "model", "--embeddings", help="with --retriever: 'model' (input embeddings) or a sentence encoder name"
    ),
    resamples: int = typer.Option(
        1000, "--resamples", help="bootstrap draws of the docs or episodes for F1's 95% interval (0: no interval)"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap draws"),
    report: Path | None = typer.Option(
        None,
        "--report",
        dir_okay=False,
        help="HTML page (one file, no network): every document's gold and predicted entities side by side, each "
        "error classified, P/R/F per type, a filter by kind of error",
    ),
    meta: bool = typer.Option(
        False,
        "--meta",
        help="write the scores into PIPELINE/meta.json (performance: ents_p/r/f, ents_per_type) with a model card "
        "(description, usage, base model, data), which `spacy package` carries into the package",
    ),
    source: str | None = typer.Option(None, "--source", help="with --meta: the training data, for the card"),
    source_licence: str | None = typer.Option(None, "--source-licence", help="with --meta: that data's licence"),
    licence: str | None = typer.Option(None, "--licence", help="with --meta: the package's licence"),
) -> None:
    """Run PIPELINE over DATA, print the scores as Markdown tables and write them with the settings to --output
    (and the documents with their errors to --report)."""
    from ..evaluation.html_report import write_report
    from ..evaluation.model_card import write_meta
    from ..evaluation.protocols import evaluate
    from ..evaluation.report import to_json, to_markdown

    _check_meta_options(pipeline, meta, source, source_licence, licence, fine_tune_steps or retriever)
    with reported(ValueError, OSError):  # bad data or protocol; OSError: spaCy cannot load the pipeline
        nlp = pipeline
        overrides: dict = {}
        if fine_tune_objective is not None and (fine_tune_objective not in FINE_TUNE_OBJECTIVES or not fine_tune_steps):
            raise ValueError(
                f"--fine-tune-objective {fine_tune_objective!r}: use one of {', '.join(FINE_TUNE_OBJECTIVES)}, "
                "together with --fine-tune-steps N."
            )
        if fine_tune_steps:
            adaptation = {"@misc": "spacy_fsner.FineTuneAdaptation.v1", "steps": fine_tune_steps}
            if fine_tune_objective is not None:
                adaptation["objectives"] = FINE_TUNE_OBJECTIVES[fine_tune_objective]
            overrides[f"components.{component or 'fsner'}.adaptation"] = adaptation
        if retriever is not None:
            if retriever not in RETRIEVERS:
                raise ValueError(f"--retriever {retriever!r}: use one of {', '.join(RETRIEVERS)}.")
            spec = {"@misc": RETRIEVERS[retriever], "k": k}
            if retriever != "random":
                spec["embeddings"] = embeddings
            overrides[f"components.{component or 'fsner'}.retriever"] = spec
        if overrides:
            import spacy

            nlp = spacy.load(pipeline, config=overrides)
        run = evaluate(
            nlp,
            data,
            protocol=protocol,
            component=component,
            batch_size=batch_size,
            limit=limit,
            data_format=data_format,
            scheme=scheme,
            resamples=resamples,
            seed=seed,
        )
    settings = run.settings
    count = f"{settings['n_docs']} docs"
    if "n_episodes" in settings:
        count = f"{settings['n_episodes']} episodes ({count} in their query sets)"
    typer.echo(f"## {settings['protocol']}: {pipeline} on {data}, {count}\n")
    typer.echo(to_markdown(run.results))
    if settings.get("component_stats"):
        typer.echo(f"{settings['component']}: {settings['component_stats']}")
    if output is not None:
        typer.echo(f"wrote {to_json(run.results, settings, output)}")
    if report is not None:
        with reported(ValueError, OSError):
            typer.echo(f"wrote {write_report(run.examples, report, settings=settings)}")
    if meta:
        sources = [{"name": source, **({"license": source_licence} if source_licence else {})}] if source else []
        with reported(ValueError, OSError):
            typer.echo(f"wrote {write_meta(pipeline, run, sources=sources, licence=licence)}")


def _check_meta_options(
    pipeline: Path, meta: bool, source: str | None, source_licence: str | None, licence: str | None, changed: object
) -> None:
    """Before the run: the card's options go with --meta, and --meta records the pipeline as saved."""
    given = [
        name
        for name, value in (("--source", source), ("--source-licence", source_licence), ("--licence", licence))
        if value
    ]
    if given and not meta:
        fail(f"{', '.join(given)} describe(s) the package for its meta.json: add --meta")
    if source_licence and not source:
        fail("--source-licence is the licence of the training data: name that data with --source")
    if not meta:
        return
    if changed:
        fail(
            "--meta records the scores of PIPELINE as saved, but --fine-tune-steps/--retriever change it: evaluate "
            "without them, or save the changed pipeline and evaluate that"
        )
    if not (pipeline / "meta.json").is_file():
        fail(f"{pipeline} has no meta.json: pass a saved pipeline directory (what nlp.to_disk or `train` wrote)")
