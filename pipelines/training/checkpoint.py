"""Training checkpoints in safetensors + JSON, so that ``--resume`` continues an interrupted run."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from deepwe_mm import DeepWe


@dataclass
class LoopState:
    """Where the training loop is: the next epoch to run and the early-stopping record."""

    epoch: int = 0
    step: int = 0
    best_score: float = float("-inf")
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    history: list[dict[str, float]] | None = None


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = value
    for name, value in meta["scalars"].items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    folder: Path,
    *,
    model: torch.nn.Module,
    core: DeepWe,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loop: LoopState,
    fingerprint: str,
) -> None:
    """Write ``last.safetensors`` + ``last.json`` atomically (temporary names, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    tensors |= opt_tensors
    tensors["rng.torch"] = torch.get_rng_state()
    memory = core.memory
    if memory is not None:
        tensors["memory.rows"] = memory.rows.detach().cpu().contiguous()
        tensors["memory.outcomes"] = memory.outcomes.detach().cpu().contiguous()
        tensors["memory.ids"] = memory.ids.detach().cpu().contiguous()
    meta = {
        "fingerprint": fingerprint,
        "loop": asdict(loop),
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
        "memory": None if memory is None else {"count": memory.count, "position": memory.position},
    }
    save_file(tensors, str(folder / "last.safetensors.tmp"))
    (folder / "last.json.tmp").write_text(json.dumps(meta), encoding="utf-8")
    os.replace(folder / "last.safetensors.tmp", folder / "last.safetensors")
    os.replace(folder / "last.json.tmp", folder / "last.json")


def load_checkpoint(
    folder: Path,
    *,
    model: torch.nn.Module,
    core: DeepWe,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    fingerprint: str,
) -> LoopState | None:
    """Restore the last checkpoint into the given objects; None when there is none.

    Raises:
        ValueError: the checkpoint belongs to another cohort or configuration.
    """
    if not (folder / "last.json").is_file():
        return None
    meta = json.loads((folder / "last.json").read_text(encoding="utf-8"))
    if meta["fingerprint"] != fingerprint:
        raise ValueError(
            f"{folder}: the checkpoint was made with another cohort or configuration; "
            "remove it or train into a new folder"
        )
    tensors = load_file(str(folder / "last.safetensors"))
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    if core.memory is not None and meta["memory"] is not None:
        core.memory.rows.copy_(tensors["memory.rows"])
        core.memory.outcomes.copy_(tensors["memory.outcomes"])
        core.memory.ids.copy_(tensors["memory.ids"])
        core.memory.count = meta["memory"]["count"]
        core.memory.position = meta["memory"]["position"]
    return LoopState(**meta["loop"])
