"""The spaCy side: the `fsner` component, the NER task (Docs to prompts, generations back to spans; also
spacy-llm's `spacy_fsner.NER.v1`), chunking, conflict resolution and in-context adaptation."""

from .adaptation import Adaptation, InContextAdaptation
from .batched import BatchedPipe
from .fsner import FewShotNER, make_fsner
from .task import REPORT_KEY, FewShotNERTask, LabelSet, label_setting, make_ner_scorer, make_ner_task

__all__ = [
    "Adaptation",
    "BatchedPipe",
    "FewShotNER",
    "FewShotNERTask",
    "InContextAdaptation",
    "LabelSet",
    "REPORT_KEY",
    "label_setting",
    "make_fsner",
    "make_ner_scorer",
    "make_ner_task",
]
