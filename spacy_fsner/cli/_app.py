import typer

app = typer.Typer(
    name="spacy_fsner",
    help="Few-shot NER for spaCy: build tiny models, convert data, sample episodes, evaluate, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Few-shot NER for spaCy (keeps `python -m spacy_fsner COMMAND` a group even with one command)."""
