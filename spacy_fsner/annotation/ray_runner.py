"""The Ray path of `annotate`: shards annotated by Ray Data actors that each load the pipeline once.

The driver (this process) reads the pending shards from the input and puts each into Ray's object store as a
one-row Arrow table (shard number and its records), so the input is read only here and the driver holds one shard
at a time (the object store spills to disk when it fills). `map_batches` runs `ShardAnnotator`, a callable class:
Ray Data starts `workers` actors, each loading the pipeline once, and hands each one shard at a time
(`batch_size=1`, one block per shard). An actor returns the shard's encoded bytes (`formats.annotate_shard`, the
same code as the local path); the driver writes each shard as it arrives, atomically, under its own number, so the
order in which shards finish does not matter and the output equals `nlp.pipe` over the input in order.

A pipeline directory is sent to the actors as a tar archive (it need not be on the workers' disks); an installed
pipeline package is loaded by name and must be installed where the actors run. The pipeline's base model must load
on the workers: a fetch-model name or hub id (cached there, or with network), or a path that exists there. Ray is
an optional dependency (`pip install "spacy-fsner[ray]"`), imported only here.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .formats import annotate_shard
from .inputs import Record

INSTALL_HINT = 'pip install "spacy-fsner[ray]"'


class RayWorkerError(RuntimeError):
    """A Ray actor failed (loading the pipeline, or annotating a shard): the message is the worker's own error."""


def import_ray() -> Any:
    """`ray` with Ray Data, or an ImportError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"--ray-address needs Ray with Ray Data, which is not installed ({error}): {INSTALL_HINT}"
        ) from None
    return ray


def annotate_on_ray(
    pipeline: str | Path,
    pending: Iterator[tuple[int, list[Record]]],
    write: Callable[[int, bytes], object],
    advance: Callable[[int], object],
    settings: Any,
    *,
    batch_size: int,
    output_format: str,
) -> None:
    """Annotate the `pending` shards on Ray as `settings` (a `run.RaySettings`) say, calling `write(index, bytes)`
    for each shard as it arrives and `advance(n_docs)` after it."""
    ray = import_ray()
    started = connect(ray, settings)
    try:
        import pyarrow as pa

        refs, sizes = [], {}
        for index, records in pending:
            payload = json.dumps([[r.text, r.meta] for r in records], ensure_ascii=False).encode("utf-8")
            refs.append(ray.put(pa.table({"shard": [index], "records": [payload]})))
            sizes[index] = len(records)
        dataset = ray.data.from_arrow_refs(refs).map_batches(
            ShardAnnotator,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(settings.workers, len(refs))),  # no idle actors
            num_cpus=settings.cpus_per_worker,
            num_gpus=settings.gpus_per_worker or None,
            fn_constructor_kwargs={
                "pipeline": pack_pipeline(pipeline),
                "batch_size": batch_size,
                "output_format": output_format,
            },
        )
        try:
            for row in dataset.iter_rows():
                index = int(row["shard"])
                write(index, bytes(row["data"]))
                advance(sizes[index])
        except ray.exceptions.RayError as error:
            raise RayWorkerError(
                f"a Ray worker failed: {worker_error(error)} (the shards written so far are kept; fix the cause and "
                "run again to resume)"
            ) from error
    finally:
        if started:
            ray.shutdown()


def worker_error(error: BaseException) -> str:
    """The worker's own error in one line: the first exception in the chain that is not Ray's, else the last
    `SomeError: message` line of the traceback text Ray sends back (an actor that died in its constructor)."""
    seen: BaseException | None = error
    while seen is not None:
        if not type(seen).__module__.startswith("ray."):
            return f"{type(seen).__name__}: {seen}"
        seen = getattr(seen, "cause", None) or seen.__cause__
    lines = [line.strip() for line in str(error).splitlines()]
    raised = [line for line in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception): ", line)]
    return raised[-1] if raised else next((line for line in lines if line), type(error).__name__)


def connect(ray: Any, settings: Any) -> bool:
    """Connect to the Ray instance `settings.address` names (see `run.RaySettings`); True when this call started a
    local instance (which the run then shuts down). An instance this process already started is used as it is."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False  # the run's own bar counts documents ...
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # ... without Ray's note about its own
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return False
    if settings.address != "local":
        ray.init(address=settings.address)
        return False
    ray.init(
        num_cpus=max(1, round(settings.workers * settings.cpus_per_worker)),
        include_dashboard=False,
        log_to_driver=False,
    )
    gpus = ray.cluster_resources().get("GPU", 0)
    if settings.gpus_per_worker > gpus:
        ray.shutdown()
        raise ValueError(
            f"--gpus-per-worker {settings.gpus_per_worker:g}: Ray finds {gpus:g} GPUs on this machine, so no worker "
            f"would ever start; use at most {gpus:g} (0 without a GPU)"
        )
    return True


def pack_pipeline(pipeline: str | Path) -> str | bytes:
    """A pipeline directory as the bytes of a tar archive (what the actors unpack and load), a package name as is."""
    path = Path(pipeline)
    if not path.is_dir():
        return str(pipeline)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(path, arcname="pipeline")
    return archive.getvalue()


class ShardAnnotator:
    """A Ray Data actor: loads the pipeline once, then turns each batch of one shard (its number and records as
    JSON) into `{"shard", "data"}`, `data` the shard file's bytes."""

    def __init__(self, pipeline: str | bytes, batch_size: int, output_format: str) -> None:
        import spacy

        self.batch_size = batch_size
        self.output_format = output_format
        if isinstance(pipeline, bytes):
            self._unpacked = tempfile.TemporaryDirectory(prefix="fsner-pipeline-")
            with tarfile.open(fileobj=io.BytesIO(pipeline)) as tar:
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python < 3.10.12: none
                tar.extractall(self._unpacked.name, **safe)
            pipeline = str(Path(self._unpacked.name) / "pipeline")
        self.nlp = spacy.load(pipeline)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        shards, data = [], []
        for index, payload in zip(batch["shard"], batch["records"], strict=True):
            records = [Record(text, meta) for text, meta in json.loads(bytes(payload).decode("utf-8"))]
            shards.append(int(index))
            data.append(annotate_shard(self.nlp, records, batch_size=self.batch_size, output_format=self.output_format))
        return {"shard": np.array(shards, dtype=np.int64), "data": np.array(data, dtype=object)}
