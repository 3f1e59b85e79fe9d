"""EL4NER: an ensemble of small LLMs as one spaCy component (`el4ner`): the component, its members, the stages they
run (extraction, classification, validation) and how their answers are combined (voting, pooled rejection)."""

from .el4ner import EL4NER, EL4NER_STAGES, make_el4ner
from .members import LMMember, Member
from .voting import REJECTIONS, pooled_rejection, vote

__all__ = ["EL4NER", "EL4NER_STAGES", "LMMember", "Member", "REJECTIONS", "make_el4ner", "pooled_rejection", "vote"]
