import re
from pathlib import Path

import typer

from ._app import app, reported

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def shipped_configs(directory: Path = CONFIGS) -> str:
    """The shipped training configs (those with a [train] section) for `train --help`, one line each: the file and
    the start of its first comment line."""
    lines = []
    for path in sorted(directory.glob("*.cfg")):
        text = path.read_text(encoding="utf-8").splitlines()
        if "[train]" not in text:
            continue
        first = next((line for line in text if line.startswith("#")), "#")
        summary = re.split(r"\. |; | \(", first.lstrip("# "))[0].rstrip(".,")
        lines.append(f"configs/{path.name}: {summary}".replace("[", "\\["))
    return "Shipped configs:\n\n" + "\n\n".join(lines) if lines else ""


@app.command(
    "train",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog=shipped_configs(),
)
def train_command(
    ctx: typer.Context,
    config: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="Training config (pipeline + \\[train]), e.g. configs/obp.cfg."
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        file_okay=False,
        help="Directory for adapter, pipeline, "
        "metrics.json, curves.png and checkpoints (a killed run of the same settings and data resumes from them).",
    ),
) -> None:
    """Train the fsner pipeline of CONFIG (one stage: SFT with its objectives, or DPO), like `spacy train`:
    overrides as --section.key value (e.g. --paths.train corpus/train.spacy --paths.base_model models/smollm2).
    On several processes or GPUs: `accelerate launch --config_file configs/accelerate/ddp.yaml -m spacy_fsner train
    ...` (docs/scaling.md)."""
    from spacy.cli._util import parse_config_overrides

    from ..models.fetch import FetchError
    from ..training.distributed import is_main_process
    from ..training.run import run_training

    with reported(ValueError, OSError, FetchError):  # OSError: a model or file that cannot be loaded or found
        overrides = parse_config_overrides(ctx.args)
        pipeline = run_training(config, output, overrides)
    if is_main_process():  # under `accelerate launch`, once
        typer.echo(f"trained pipeline: {pipeline} (metrics: {output / 'metrics.json'})")
