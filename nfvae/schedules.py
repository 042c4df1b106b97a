"""Learning-rate schedules that a config names (``scheduler`` group, ``_partial_``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class _StageFactor:
    """epoch -> the factor of the stage that epoch falls in (the last one after the end).

    An object rather than a closure: LambdaLR saves a callable object's attributes in
    its state_dict, so the schedule travels in checkpoints and resumes where it was."""

    def __init__(self, epochs: Sequence[int], factors: Sequence[float]):
        self.bounds: list[int] = []
        total = 0
        for length in epochs:
            total += int(length)
            self.bounds.append(total)
        self.factors = [float(f) for f in factors]

    def __call__(self, epoch: int) -> float:
        for bound, factor in zip(self.bounds, self.factors):
            if epoch < bound:
                return factor
        return self.factors[-1]


class StagedLR(LambdaLR):
    """A piecewise-constant learning rate: stage i lasts ``epochs[i]`` epochs at
    ``factors[i]`` times the optimizer's lr; after the last stage the last factor stays.

    Burda et al. (2016) train for 3^i epochs at lr 1e-3 * 10^(-i/7), i = 0..7 (3280
    epochs): conf/scheduler/iwae.yaml. Step it once per epoch (``interval: epoch``).
    """

    def __init__(self, optimizer: Optimizer, epochs: Sequence[int], factors: Sequence[float],
                 last_epoch: int = -1):
        if len(epochs) != len(factors) or not epochs:
            raise ValueError(f"scheduler.epochs and scheduler.factors must be non-empty and "
                             f"of equal length, got {len(epochs)} and {len(factors)}")
        if min(int(e) for e in epochs) < 1:
            raise ValueError(f"scheduler.epochs must all be >= 1, got {list(epochs)}")
        if min(float(f) for f in factors) <= 0:
            raise ValueError(f"scheduler.factors must all be > 0, got {list(factors)}")
        super().__init__(optimizer, _StageFactor(epochs, factors), last_epoch=last_epoch)

    @property
    def total_epochs(self) -> int:
        return self.lr_lambdas[0].bounds[-1]


class _WarmupFactor:
    """step -> min(1, (step + 1) / steps); an object so that it travels in checkpoints."""

    def __init__(self, steps: int):
        self.steps = int(steps)

    def __call__(self, step: int) -> float:
        return min(1.0, (step + 1) / self.steps)


class LinearWarmup(LambdaLR):
    """The learning rate rises linearly from lr / ``steps`` to lr over the first
    ``steps`` optimizer steps, then stays (Glow's warm-up, Kingma & Dhariwal 2018, whose
    code ramps over its first epochs). Step it every batch (``interval: step``)."""

    def __init__(self, optimizer: Optimizer, steps: int, last_epoch: int = -1):
        if int(steps) < 1:
            raise ValueError(f"scheduler.steps must be >= 1, got {steps}")
        super().__init__(optimizer, _WarmupFactor(steps), last_epoch=last_epoch)
