"""Corpus-scale annotation: a saved pipeline over a JSONL or text corpus into resumable DocBin or JSONL shards,
in this process or on a Ray cluster (Ray Data actors that each hold the pipeline).

`annotate` is what `python -m spacy_fsner annotate` calls; `shard_paths` lists a run's shards in document order
and `read_docs` reads DocBin shards back as Docs.
"""

from .formats import META_KEY, OUTPUT_FORMATS, doc_record
from .inputs import INPUT_FORMATS, Record, read_records
from .ray_runner import RayWorkerError
from .run import Annotation, RaySettings, annotate, pipeline_fingerprint
from .shards import MANIFEST, read_docs, shard_paths

__all__ = [
    "INPUT_FORMATS",
    "MANIFEST",
    "META_KEY",
    "OUTPUT_FORMATS",
    "Annotation",
    "RaySettings",
    "RayWorkerError",
    "Record",
    "annotate",
    "doc_record",
    "pipeline_fingerprint",
    "read_docs",
    "read_records",
    "shard_paths",
]
