"""Commands that train: ``deepwe train`` (torchrun for several processes) and ``deepwe tune``."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.rendering import (
    make_console,
    print_training,
)
from pipelines.cli.typer_app import app, handled_errors


@app.command()
def train(
    spec: Annotated[Path, typer.Argument(help="The cohort spec (YAML) to train on.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder to write the model bundle into.")],
    config: Annotated[
        Path | None,
        typer.Option(help="YAML file of training settings overriding the defaults (see configs/)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto (GPU when there is one), cpu or cuda.")] = "auto",
    resume: Annotated[
        bool, typer.Option(help="Continue from the last checkpoint of an interrupted run.")
    ] = False,
    ensemble: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Train this many models (seeds seed..seed+k-1) into one bundle that averages them; "
            "overrides the config's `ensemble`. Steadier risks for k times the training time.",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Torch threads on the CPU. Default: the cores other processes leave free, checked "
            "before training and after every epoch (torch threads sharing a core with another busy "
            "process can make training ten times slower). Give a number for runs that must repeat "
            "bit for bit.",
        ),
    ] = None,
) -> None:
    """Train a DeepWe model on a cohort and write a model bundle (safetensors + JSON, never a pickle).

    The cohort is validated first; a spec that fails `deepwe validate` stops here with the same report
    (exit 2). Uses the spec's split column, or a patient-level split drawn from the spec's seed.
    Under torchrun, every process trains its share and rank 0 writes the bundle.
    """
    from pipelines.cohorts.prepare import CohortError
    from pipelines.training.train import train as run_training
    from pipelines.training.train_config import TrainConfig

    _init_distributed()
    with handled_errors(spec, "train", bad_input=(CohortError,)):
        settings = TrainConfig.from_yaml(config) if config else TrainConfig()
        if ensemble is not None:
            settings = dataclasses.replace(settings, ensemble=ensemble)
        from pipelines.cohorts.decoded_cache import cache_counts

        before = dataclasses.replace(cache_counts())
        with _torch_threads(threads):
            result = run_training(spec, out, settings, device=device, resume=resume)
        if int(os.environ.get("RANK", "0")) != 0:
            return
    print_training(result, cache_counts().since(before))


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """A block in which torch runs on ``threads`` threads, or on the cores other processes leave
    free (saying so on stderr when that is fewer than torch would take)."""
    import torch

    from pipelines.common.parallelism import threads_follow_free_cores

    if threads is not None:
        torch.set_num_threads(threads)
        yield
        return
    with threads_follow_free_cores() as guard:
        if torch.get_num_threads() < guard.most and guard.others is not None:
            make_console(stderr=True).print(
                f"[dim]torch on {torch.get_num_threads()} of {guard.most} threads: other processes keep "
                f"{guard.others:.1f} cores busy (checked again after each epoch; --threads to choose)[/]"
            )
        yield


@app.command()
def tune(
    spec: Annotated[Path, typer.Argument(help="The cohort spec (YAML) to tune on.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder for best.yaml and trials.csv.")],
    trials: Annotated[int, typer.Option(min=1, help="Most trials to run.")] = 20,
    time_budget: Annotated[
        str | None, typer.Option(help="Stop starting trials after this long: 90s, 30m, 2h.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML of the settings that are not searched (epochs, encoders...)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto (GPU when there is one), cpu or cuda.")] = "auto",
) -> None:
    """Search learning rate, widths, depth, dropout and the loss weights with Optuna (TPE).

    Every trial trains on the training split and is scored by its validation AUROC; the test split
    is never read. Writes OUT/best.yaml (for `deepwe train --config`) and OUT/trials.csv. Torch runs
    on the cores other processes leave free, as in `deepwe train`.
    """
    from pipelines.cohorts.prepare import CohortError
    from pipelines.training.train_config import TrainConfig
    from pipelines.training.tune import SEARCH_SPACE, parse_duration
    from pipelines.training.tune import tune as run_tuning

    console = make_console()
    with handled_errors(spec, "tune", bad_input=(CohortError,)):
        budget = parse_duration(time_budget) if time_budget else None
        base = TrainConfig.from_yaml(config) if config else TrainConfig()
        console.print("searching " + "; ".join(f"{k}: {v}" for k, v in SEARCH_SPACE.items()))

        def show(row: dict) -> None:
            console.print(
                f"trial {row['trial']}: val AUROC {row['val_auroc']:.4f}, log-loss {row['val_log_loss']:.4f} "
                f"({row['epochs']} epochs, {row['seconds']:.0f} s)"
            )

        with _torch_threads(None):
            result = run_tuning(
                spec, out, base, trials=trials, time_budget_s=budget, device=device, on_trial=show
            )
    console.print(
        f"best of {result.trials} trials: val AUROC {result.best['val_auroc']:.4f}; "
        f"settings: {result.best_config}; every trial: {result.trials_table}"
    )


def _init_distributed() -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
