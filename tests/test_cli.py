"""The command-line interface: its top-level help names every command it has."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from spacy_fsner.cli import app


def test_top_level_help_names_every_command():
    names = {command.name or command.callback.__name__.replace("_", "-") for command in app.registered_commands}
    assert {"train", "evaluate", "fetch-model", "benchmark"} <= names
    summary = app.info.help
    missing = sorted(name for name in names if not re.search(rf"\({re.escape(name)}\)", summary))
    assert not missing, f"the top-level help does not name {missing}"
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert all(name in result.output for name in names)
