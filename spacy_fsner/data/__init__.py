"""Reading and writing gold data: CoNLL and token-tag columns, Few-NERD episodes, any of them as a corpus, and the
Few-NERD episode sampler. No model and no pipeline here: the layers above read their data through this package."""

from .columns import read_conll, read_tagged
from .episodes import Episode, read_episodes, write_episodes
from .readers import FORMATS, detect_format, read_corpus, read_docs
from .sampler import EpisodeSampler, sample_episodes
from .spans import TagError, make_doc, tags_to_spans

__all__ = [
    "Episode",
    "EpisodeSampler",
    "FORMATS",
    "TagError",
    "detect_format",
    "make_doc",
    "read_conll",
    "read_corpus",
    "read_docs",
    "read_episodes",
    "read_tagged",
    "sample_episodes",
    "tags_to_spans",
    "write_episodes",
]
