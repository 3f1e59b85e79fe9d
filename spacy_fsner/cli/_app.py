import typer

app = typer.Typer(
    name="spacy_fsner",
    help="Few-shot NER for spaCy: build tiny models, convert data, sample episodes, evaluate, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
