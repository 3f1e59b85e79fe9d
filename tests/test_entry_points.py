"""Every factory and registered function is an entry point, and each entry point resolves."""

import configparser
import re
from pathlib import Path

import spacy
from spacy.language import Language
from spacy.util import registry

REPO = Path(__file__).resolve().parents[1]
GROUPS = {
    "spacy_misc": "misc",
    "spacy_readers": "readers",
    "spacy_scorers": "scorers",
    "thinc_llm_models": "llm_models",
    "thinc_llm_tasks": "llm_tasks",
}


def _entry_points() -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    section = parser["options.entry_points"]
    return {group: dict(line.split(" = ") for line in section[group].strip().splitlines()) for group in section}


def test_each_entry_point_resolves():
    import spacy_llm  # noqa: F401  (creates the llm_* registries)

    import spacy_fsner.models.vllm  # noqa: F401  (the same for spacy_fsner.VLLM.v1)
    import spacy_fsner.prompts.el4ner  # noqa: F401  (its names are found before the entry points are reinstalled)

    entry_points = _entry_points()
    assert set(entry_points["spacy_factories"]) == {"fsner", "el4ner"}
    for name in entry_points["spacy_factories"]:
        spacy.blank("en")  # imports factories from entry points
        assert Language.has_factory(name)
    for group, registry_name in GROUPS.items():
        for name, target in entry_points[group].items():
            func = registry.get(registry_name, name)
            module, attr = target.split(":")
            assert func.__name__ == attr and func.__module__ == module


def test_every_registered_name_in_the_code_is_an_entry_point():
    listed = {name for group in _entry_points().values() for name in group}
    pattern = re.compile(r"""(?:registry\.\w+|factory)\(\s*["']([\w.]+)["']""")
    found = {m for path in (REPO / "spacy_fsner").rglob("*.py") for m in pattern.findall(path.read_text())}
    assert found, "expected registered names in the package"
    assert found <= listed, f"registered but not listed in setup.cfg: {sorted(found - listed)}"
