"""The Ray engine of ``deepwe predict``: the local engine's chunks, predicted by Ray workers.

Each worker loads the bundle (verifying every hash) and the cohort once, then predicts one chunk per
call with :func:`pipelines.inference.predict.predict_chunk`, which writes ``<output>.partial/chunk-NNNNNN.parquet``
by temporary name and rename. The driver (``predict_cohort``) takes the chunks in input order, appends
them to the audit log, counts errors against ``--max-errors`` and assembles the output, exactly as for
the local engine, so the output file is the same. Per-row errors stay ours: a bad file fails its row,
never a Ray task. A worker that dies is restarted and its chunk predicted again.

This is the only module that imports ``ray`` (an import-linter contract); the extra installs it:
``pip install 'deepwe-mm[ray]'``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import ray
import torch

from data_schemas import PredictionRecord
from pipelines.bundles.bundle_io import BundleError, read_bundle
from pipelines.bundles.loading import Bundle, load_bundle
from pipelines.inference.batching import PredictOptions, compatible_cohort
from pipelines.inference.predict import ChunkJob, chunk_job, predict_chunk, read_chunk

_STOP_SECONDS = 60.0


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide the Ray engine runs.

    Attributes:
        address: the Ray cluster to join (``auto``, ``ray://host:10001``, ...); None starts a local
            cluster for this run and stops it afterwards.
        workers: Ray workers (actors), each holding one copy of the model.
        cpus_per_worker: CPUs Ray reserves per worker (fractions allowed); torch uses
            ``max(1, int(cpus_per_worker))`` threads in each.
        gpus_per_worker: GPUs per worker; above 0 the worker predicts on its GPU.
        max_restarts: how often a worker that dies is restarted (its chunk is predicted again).
    """

    address: str | None = None
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_restarts: int = 3

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1 for the Ray engine, got {self.workers}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"--cpus-per-worker must be above 0, got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")


def driver_bundle(path: str | Path) -> Bundle:
    """The bundle at ``path``, every hash verified, without building its model.

    The driver only plans the chunks, appends to the audit log and assembles the output; the workers
    load the model. Skipping it saves the driver a model's memory (the text model included).
    """
    return Bundle(contents=read_bundle(path), model=None, device=torch.device("cpu"))


class ChunkWorker:
    """One Ray worker: the bundle and the cohort loaded once, one chunk predicted per call.

    A problem while loading is kept and reported by :meth:`problem`, so the driver can say it in one
    line instead of a Ray traceback.
    """

    def __init__(
        self,
        bundle_path: str,
        bundle_sha256: str,
        spec_path: str,
        options: PredictOptions,
        partial: str,
        fingerprint: str,
        device: str,
        threads: int,
    ) -> None:
        torch.set_num_threads(threads)
        self.job: ChunkJob | None = None
        self._problem: str | None = None
        try:
            bundle = load_bundle(bundle_path, device=device)
            if bundle.sha256 != bundle_sha256:
                raise BundleError(f"{bundle_path}: the bundle differs from the one the driver loaded")
            job = chunk_job(bundle, compatible_cohort(bundle, spec_path), options, Path(partial))
            if job.fingerprint != fingerprint:
                raise ValueError(
                    f"{spec_path}: the cohort table differs from the one the driver read "
                    "(every worker must see the same files)"
                )
            self.job = job
        except (BundleError, ValueError, OSError) as error:
            self._problem = f"{error.__class__.__name__}: {error}"

    def problem(self) -> str | None:
        """Why this worker cannot predict (None when it can)."""
        return self._problem

    def predict(self, number: int) -> int:
        """Predict chunk ``number`` and write its file; returns the number."""
        if self.job is None:
            raise RuntimeError(self._problem or "the worker did not load")
        predict_chunk(self.job, number)
        return number


class RayEngine:
    """Predicts chunks on Ray workers; yields them in input order as their files appear.

    Chunk ``k`` of the work goes to worker ``k % workers``; each worker runs its calls one at a time.
    Closing the iterator (the driver stopped: ``--max-errors``, an error, Ctrl+C) drops the calls not
    started, kills the workers and waits until they are gone, so a stopped run leaves no work running.
    """

    def __init__(self, settings: RaySettings | None = None) -> None:
        self.settings = settings or RaySettings()

    def predict_chunks(self, job: ChunkJob, numbers: Sequence[int]) -> Iterator[list[PredictionRecord]]:
        """The records of each chunk in ``numbers``, in that order (see :class:`RayEngine`)."""
        if not numbers:
            return
        started_here = self._connect()
        workers, calls = [], []
        try:
            workers = self._start_workers(job)
            calls = [workers[k % len(workers)].predict.remote(n) for k, n in enumerate(numbers)]
            for number, call in zip(numbers, calls, strict=True):
                ray.get(call)
                yield read_chunk(job.part(number))
        finally:
            _, queued = ray.wait(calls, num_returns=len(calls), timeout=0) if calls else ([], [])
            for call in queued:  # calls not started are dropped, not retried on a dying worker
                ray.cancel(call)
            for worker in workers:
                ray.kill(worker, no_restart=True)
            if calls:
                ray.wait(calls, num_returns=len(calls), timeout=_STOP_SECONDS)
            if started_here:
                ray.shutdown()

    def _connect(self) -> bool:
        """Join the configured cluster, or start a local one; True when this call started Ray."""
        if ray.is_initialized():
            return False
        settings = self.settings
        if settings.address is None:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            needed = settings.workers * settings.cpus_per_worker
            available = ray.cluster_resources().get("CPU", 0.0)
            if needed > available:
                ray.shutdown()
                raise ValueError(
                    f"{settings.workers} Ray workers × {settings.cpus_per_worker} CPUs need {needed:g} CPUs; "
                    f"this machine has {available:g}: lower --workers or --cpus-per-worker"
                )
        else:
            ray.init(address=settings.address, log_to_driver=False)
        return True

    def _start_workers(self, job: ChunkJob) -> list:
        """Start the workers and wait until each has loaded the bundle and the cohort.

        Raises:
            ValueError: a worker could not load them; the message is the worker's.
        """
        settings = self.settings
        actor = ray.remote(ChunkWorker).options(
            num_cpus=settings.cpus_per_worker,
            num_gpus=settings.gpus_per_worker,
            max_restarts=settings.max_restarts,
            max_task_retries=settings.max_restarts,
        )
        device = "cuda" if settings.gpus_per_worker > 0 else "cpu"
        workers = [
            actor.remote(
                str(job.bundle.path),
                job.bundle.sha256,
                str(job.cohort.spec_path),
                job.options,
                str(job.partial),
                job.fingerprint,
                device,
                max(1, int(settings.cpus_per_worker)),
            )
            for _ in range(settings.workers)
        ]
        try:
            problems = ray.get([worker.problem.remote() for worker in workers])
        except BaseException:
            for worker in workers:
                ray.kill(worker, no_restart=True)
            raise
        for problem in problems:
            if problem is not None:
                for worker in workers:
                    ray.kill(worker, no_restart=True)
                raise ValueError(f"a Ray worker cannot predict: {problem}")
        return workers
