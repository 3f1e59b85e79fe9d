"""`annotate`: a corpus through a saved pipeline into shards, in this process or on a Ray cluster, resumable.

The input is read as a stream, shard by shard (`shard_size` documents each); the shards already written by an
earlier run into the same OUTPUT are skipped without running the pipeline (see `shards` for the manifest that
makes that safe). Locally, each pending shard is `nlp.pipe` over its documents, and the shard is written as soon as
it is done. With `RaySettings`, the pending shards go to Ray Data actors that each load the pipeline once
(`ray_runner`); the driver writes the shards they send back, with the same bytes as the local path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count, islice
from pathlib import Path

import spacy
from spacy.language import Language

from ..log import logger
from ..models.fetch import tree_sha256
from .formats import RESERVED_FIELDS, annotate_shard, check_format
from .inputs import Record, read_records, scan_input
from .shards import ShardDirectory, n_shards, open_run


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide to run on Ray: `address` is `local` (start a Ray instance on this machine, or use the
    one this process already started), `auto` (the cluster this machine belongs to) or a cluster address
    (`ray://HEAD:10001`, `HEAD:6379`); `workers` actors, each holding the pipeline, with `cpus_per_worker` CPUs and
    `gpus_per_worker` GPUs (a fraction shares a GPU between actors)."""

    address: str = "local"
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers={self.workers}: use at least 1 Ray worker")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ValueError(
                f"cpus per worker {self.cpus_per_worker}, gpus per worker {self.gpus_per_worker}: CPUs must be "
                "positive and GPUs 0 or more"
            )


@dataclass(frozen=True)
class Annotation:
    """What a run did: the shards of OUTPUT, how many were written now and how many an earlier run had written."""

    output: Path
    n_docs: int
    n_shards: int
    written: int
    skipped: int
    resumed: bool


def annotate(
    pipeline: str | Path,
    input_path: str | Path,
    output: str | Path,
    *,
    output_format: str = "spacy",
    shard_size: int = 1000,
    batch_size: int = 32,
    ray: RaySettings | None = None,
    progress: bool = False,
) -> Annotation:
    """Annotate the documents of `input_path` (.jsonl or .txt, see `inputs`) with `pipeline` (a saved pipeline
    directory or an installed pipeline package) into shards in `output` (`spacy` DocBins or `jsonl`), resuming a
    run that was stopped. Locally unless `ray` says where to run; a tqdm bar over the documents when `progress`.

    Bad input, a pipeline that is not there or an output directory of another run raise a ValueError (OSError
    when spaCy cannot load the pipeline) that names the fix.
    """
    check_format(output_format)
    if ray is not None:
        from .ray_runner import import_ray

        import_ray()  # missing Ray fails here, before OUTPUT is touched
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard size {shard_size}, batch size {batch_size}: both must be at least 1")
    output = Path(output)
    scan = scan_input(input_path, reserved=RESERVED_FIELDS[output_format])
    manifest = {
        "input": str(Path(input_path).resolve()),
        "input_sha256": scan.sha256,
        "n_docs": scan.n_docs,
        "pipeline": pipeline_fingerprint(pipeline),
        "pipeline_path": str(pipeline),
        "format": output_format,
        "shard_size": shard_size,
        "batch_size": batch_size,
    }
    total = n_shards(scan.n_docs, shard_size)
    with open_run(output, manifest) as resumed:
        shards = ShardDirectory(output, output_format)
        shards.remove_temporary_files()
        done = shards.completed(total)
        if resumed:
            logger.info(f"annotate: resuming {output}: {len(done)} of {total} shards done, {total - len(done)} to go")
        pending = _pending_shards(read_records(scan.path), shard_size, done)
        done_docs = sum(min(shard_size, scan.n_docs - index * shard_size) for index in done)
        if total == len(done):
            return Annotation(output, scan.n_docs, total, 0, len(done), resumed)
        # the pipeline loads before the progress bar starts: an error is then one line. Here it is the pipeline that
        # annotates; for a local Ray instance, a quick check of what the actors will load (weights load lazily)
        nlp = spacy.load(pipeline) if ray is None or ray.address == "local" else None
        with _progress(progress, scan.n_docs, done_docs) as advance:
            if ray is None:
                _annotate_here(nlp, pending, shards.write, advance, batch_size=batch_size, output_format=output_format)
            else:
                from .ray_runner import annotate_on_ray

                annotate_on_ray(
                    pipeline, pending, shards.write, advance, ray, batch_size=batch_size, output_format=output_format
                )
    written = len(shards.completed(total) - done)
    return Annotation(output, scan.n_docs, total, written, len(done), resumed)


def pipeline_fingerprint(pipeline: str | Path) -> str:
    """What identifies a pipeline for the resume check: the sha256 of a pipeline directory's files, or an installed
    package's name and version. A ValueError when `pipeline` is neither."""
    path = Path(pipeline)
    if path.is_dir():
        return f"sha256:{tree_sha256(path)}"
    if isinstance(pipeline, str) and spacy.util.is_package(pipeline):
        return f"package:{pipeline}=={spacy.util.get_package_version(pipeline)}"
    raise ValueError(
        f"pipeline {str(pipeline)!r} is neither a directory nor an installed pipeline package: pass a directory "
        "written by nlp.to_disk (with an fsner component, e.g.) or the name of a pipeline package you installed"
    )


def _pending_shards(records: Iterator[Record], shard_size: int, done: set[int]) -> Iterator[tuple[int, list[Record]]]:
    """(index, records) of every shard not in `done`, read from the stream one shard at a time (a finished shard's
    records are read past and dropped)."""
    for index in count():
        chunk = list(islice(records, shard_size))
        if not chunk:
            return
        if index not in done:
            yield index, chunk


def _annotate_here(
    nlp: Language,
    pending: Iterator[tuple[int, list[Record]]],
    write: Callable[[int, bytes], object],
    advance: Callable[[int], object],
    *,
    batch_size: int,
    output_format: str,
) -> None:
    """The local path: each pending shard annotated by `nlp` and written in turn (the progress advancing per doc)."""
    for index, records in pending:
        write(index, annotate_shard(nlp, records, batch_size=batch_size, output_format=output_format, on_doc=advance))


@contextmanager
def _progress(enabled: bool, total: int, initial: int) -> Iterator[Callable[[int], object]]:
    """A function that advances a tqdm bar over the documents (on stderr), which starts at the documents earlier
    runs annotated; without `enabled`, a function that does nothing."""
    if not enabled:
        yield lambda n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, initial=initial, unit="doc", desc="annotate", file=sys.stderr) as bar:
        yield bar.update
