"""The component on a real pretrained model (SmolLM2-135M-Instruct, fetched from the package index)."""

from pathlib import Path

import pytest
import spacy
from spacy.tokens import Span

from spacy_fsner.models.loading import model_location

pytestmark = pytest.mark.slow

SENTENCES = [
    "Barack Obama flew to London yesterday .",
    "The river Thames runs through Oxford .",
    "Angela Merkel and Emmanuel Macron met in Paris on Monday .",
    "Nobody said anything .",
]


@pytest.fixture(scope="module")
def nlp(smollm2_dir: Path):
    """`name` is the fetch-model name: the saved config stays portable (no path into this machine)."""
    nlp = spacy.blank("en")
    component = nlp.add_pipe(
        "fsner",
        config={
            "labels": ["PER", "LOC"],
            "label_definitions": {"PER": "the name of a specific person", "LOC": "the name of a specific place"},
            "model": {"@llm_models": "spacy_fsner.CausalLM.v1", "name": "smollm2-135m-instruct", "max_new_tokens": 24},
        },
    )
    demo = nlp.make_doc("Gordon Brown met Nicolas Sarkozy in Berlin .")
    demo.ents = [Span(demo, 0, 2, "PER"), Span(demo, 3, 5, "PER"), Span(demo, 6, 7, "LOC")]
    component.adapt([demo])
    assert Path(model_location("smollm2-135m-instruct")) == smollm2_dir  # loaded from the model cache ...
    assert component.model.generator.model.name_or_path == "smollm2-135m-instruct"  # ... and named portably
    return nlp


def _ents(docs):
    return [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in docs]


def test_finds_a_correct_entity_in_an_easy_sentence_with_a_demonstration(nlp):
    doc = nlp(SENTENCES[0])
    found = {(e.text, e.label_) for e in doc.ents}
    assert found & {("Barack Obama", "PER"), ("London", "LOC")}, found


def test_pipe_save_and_load_give_identical_entities(nlp, tmp_path):
    docs = list(nlp.pipe(SENTENCES, batch_size=4))
    assert _ents(docs) == _ents(nlp(text) for text in SENTENCES)
    for doc in docs:
        for ent in doc.ents:
            assert ent.text in doc.text and ent.text == ent.text.strip()
    nlp.to_disk(tmp_path / "pipeline")
    config = (tmp_path / "pipeline" / "config.cfg").read_text()
    assert 'name = "smollm2-135m-instruct"' in config and str(Path.home()) not in config
    loaded = spacy.load(tmp_path / "pipeline")
    assert _ents(loaded.pipe(SENTENCES)) == _ents(docs)


def test_a_fetched_directory_loads_like_any_local_model(smollm2_dir):
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "fsner",
        config={
            "labels": ["LOC"],
            "model": {
                "@llm_models": "spacy_fsner.CausalLM.v1",
                "name": str(smollm2_dir),
                "max_new_tokens": 8,
                "device": "cpu",
                "dtype": "float32",
            },
        },
    )
    doc = nlp("Paris is big .")
    assert doc.user_data["fsner"]["unplaced"] == []
    model = nlp.get_pipe("fsner").model.generator.model
    assert model.dtype.is_floating_point and str(model.dtype) == "torch.float32"
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
