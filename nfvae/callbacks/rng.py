"""Exact resume: each process's global RNG streams travel in checkpoints.

A resumed run then draws the same binarization, posterior and dequantization noise
as an uninterrupted one. Under DDP every rank keeps its own stream (all gathered into
the checkpoint); a fresh multi-process run gives each rank a stream of its own.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist

from nfvae.distributed import rank_and_world

#: Checkpoint entry with what Lightning does not save itself (RNG states, counters);
#: the policy callbacks share it, and checkpoints of every earlier version use it.
STATE_KEY = "nfvae"


def rng_state() -> dict[str, Any]:
    """This process's global RNG states as tensors, ints and tuples (weights-only loadable)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def rank_seed(rank: int) -> int:
    """A seed per rank from the run's seed (the one ``seed_everything`` set on every rank)."""
    return (torch.initial_seed() * 1_000_003 + rank) % (2**63 - 1)


class ExactResumeRNG(pl.Callback):
    """Saves every rank's RNG states in ``checkpoint["nfvae"]["rng"]`` and restores them
    when training starts from that checkpoint.

    Restored in ``on_train_start``, after Lightning and the other callbacks have set up
    (and drawn what they draw), so the first resumed step draws what the interrupted
    run's next step would have drawn.
    """

    def __init__(self) -> None:
        self._resumed: list[dict[str, Any]] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rank, world = rank_and_world()
        if self._resumed:
            states, self._resumed = self._resumed, None
            if rank < len(states):
                set_rng_state(states[rank])
            else:  # more processes than when the checkpoint was saved: a fresh stream
                torch.manual_seed(rank_seed(rank))
        elif world > 1:
            # The model was initialised identically on every rank; from here each rank
            # draws its own noise.
            torch.manual_seed(rank_seed(rank))

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        states = [rng_state()]
        _, world = rank_and_world()
        if world > 1:
            # Every rank dumps the checkpoint (Lightning then writes rank 0's), so all
            # reach this collective; it keeps each rank's stream.
            states = [None] * world
            dist.all_gather_object(states, rng_state())
        checkpoint.setdefault(STATE_KEY, {})["rng"] = states

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._resumed = (checkpoint.get(STATE_KEY) or {}).get("rng")
