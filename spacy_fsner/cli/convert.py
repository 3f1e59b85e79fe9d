"""`python -m spacy_fsner convert`: a CoNLL, token-tag or episode file into a spaCy DocBin (`.spacy`)."""

from collections import Counter
from pathlib import Path

import typer

from ._app import app, reported


@app.command("convert")
def convert(
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CoNLL, token-tag or episode file"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="DocBin to write, e.g. train.spacy"),
    data_format: str = typer.Option("auto", "--format", help="auto, conll, tagged or episodes"),
    scheme: str = typer.Option(
        "auto",
        "--scheme",
        help="tag scheme: auto, iob1 or iob2 for CoNLL; auto, bio or io for token-tag files and episodes",
    ),
    strip_tag_prefix: str = typer.Option(
        "GATE-", "--strip-tag-prefix", help="removed from token-tag file tags (GUM's GATE-); '' keeps them"
    ),
    columns: int = typer.Option(4, "--columns", help="CoNLL: the column count of every line (5 for German)"),
    include_support: bool = typer.Option(
        False, "--include-support", help="episodes: write the support sentences too, not only the queries"
    ),
) -> None:
    """Write the sentences of INPUT_PATH as Docs with gold entities to OUTPUT_PATH, and print the counts."""
    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    from ..data.readers import read_docs

    with reported(ValueError):
        docs = read_docs(
            input_path,
            Vocab(),
            format=data_format,
            scheme=scheme,
            strip_tag_prefix=strip_tag_prefix,
            include_support=include_support,
            columns=columns,
        )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=docs).to_disk(output_path)
    counts = Counter(ent.label_ for doc in docs for ent in doc.ents)
    typer.echo(f"wrote {len(docs)} docs with {sum(counts.values())} entities to {output_path}")
    for label, count in sorted(counts.items()):
        typer.echo(f"  {label}\t{count}")
