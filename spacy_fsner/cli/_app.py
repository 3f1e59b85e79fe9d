import typer

app = typer.Typer(
    name="spacy_fsner",
    help="Few-shot NER for spaCy: fetch real models (fetch-model) or build a tiny one (tiny-model), convert data "
    "(convert), sample episodes (sample-episodes), train (train), evaluate (evaluate), compare scores (compare) and "
    "measure throughput (benchmark).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Few-shot NER for spaCy (keeps `python -m spacy_fsner COMMAND` a group even with one command)."""
