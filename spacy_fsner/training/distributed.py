"""A training stage on several processes (`accelerate launch`, torchrun; see docs/scaling.md): how many there are,
which one speaks and writes, and how the others learn what it decided.

Every process reads the config and the corpus, builds the same records and trains on its share of each global batch
(the trainer's sampler). One process, the main one (rank 0), writes what the run leaves behind: `run.json`, the
adapter, the pipeline, `metrics.json`, `curves.png`, and the log lines; every process takes part in saving
checkpoints, as the trainer requires (each saves its own random state; a sharded model's weights are gathered).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

WORLD_SIZE_VARIABLES = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]
RANK_VARIABLES = ["RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"]
"""Where the launchers put the number of processes and this process's rank (torchrun and `accelerate launch` set
`WORLD_SIZE` and `RANK`; MPI launchers their own), as accelerate reads them."""


def launched_processes() -> int:
    """The number of training processes the launcher started (1 without a launcher). Read before the trainer
    exists, to share the global batch among them (`TrainSettings.batch_layout`)."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(WORLD_SIZE_VARIABLES, 1)


def is_main_process() -> bool:
    """Whether this process is the one that writes and speaks (rank 0, or the only one)."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(RANK_VARIABLES, 0) == 0


def quiet_other_processes() -> None:
    """On a process other than the main one: the package's log at warnings only and no `datasets` progress bars,
    so that a run on N processes says each thing once."""
    if is_main_process():
        return
    import datasets

    logging.getLogger("spacy_fsner").setLevel(logging.WARNING)
    datasets.disable_progress_bars()


def main_decides(accelerator: Any, decide: Callable[[], T]) -> T:
    """`decide()` run by the main process alone (e.g. which checkpoint to resume from, clearing another run's), its
    answer sent to the others (it must pickle); on one process, just `decide()`."""
    from accelerate.utils import broadcast_object_list

    answer = [decide() if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(answer)
    return answer[0]
