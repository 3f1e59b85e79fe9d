"""`python -m spacy_fsner sample-episodes`: Few-NERD N-way K~2K-shot episodes from a sentence file."""

from pathlib import Path

import typer

from ._app import app, reported


@app.command("sample-episodes")
def sample_episodes_command(
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CoNLL or token-tag sentence file"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="episode file to write (Few-NERD JSONL)"),
    ways: int = typer.Option(5, "--ways", help="N: types per episode"),
    shots: int = typer.Option(1, "--shots", help="K: each type gets K to 2K mentions in the support set"),
    n: int = typer.Option(100, "--n", help="number of episodes"),
    seed: int = typer.Option(0, "--seed", help="random seed; the same seed gives the same file"),
    query_shots: int | None = typer.Option(None, "--query-shots", help="K of the query set (default: --shots)"),
    data_format: str = typer.Option("auto", "--format", help="auto, conll or tagged"),
    scheme: str = typer.Option("auto", "--scheme", help="tag scheme of the input (see `convert`)"),
    strip_tag_prefix: str = typer.Option("GATE-", "--strip-tag-prefix", help="removed from token-tag file tags"),
) -> None:
    """Sample N-way K~2K-shot episodes from the sentences of INPUT_PATH, with Few-NERD's greedy algorithm."""
    from spacy.vocab import Vocab
    from tqdm import tqdm

    from ..data.readers import detect_format, read_docs, write_episodes
    from ..data.sampler import sample_episodes

    with reported(ValueError):
        if data_format == "episodes" or (data_format == "auto" and detect_format(input_path) == "episodes"):
            raise ValueError(f"{input_path} holds episodes; sample from a sentence file (CoNLL or token-tag)")
        docs = read_docs(input_path, Vocab(), format=data_format, scheme=scheme, strip_tag_prefix=strip_tag_prefix)
        episodes = list(
            tqdm(
                sample_episodes(docs, ways, shots, n, seed=seed, query_shots=query_shots),
                total=n,
                desc="episodes",
                unit="ep",
            )
        )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    write_episodes(output_path, episodes)
    support = sum(len(episode.support) for episode in episodes) / max(len(episodes), 1)
    query = sum(len(episode.query) for episode in episodes) / max(len(episodes), 1)
    k = shots if query_shots is None else query_shots
    typer.echo(
        f"wrote {len(episodes)} {ways}-way {shots}~{2 * shots}-shot episodes (query {k}~{2 * k}) to "
        f"{output_path}; mean {support:.2f} support and {query:.2f} query sentences"
    )
