"""Check a composed config's values before anything is built.

A wrong type or range (``trainer.max_epochs=abc``, ``optimizer.lr=0``) would
otherwise surface late: after the data is loaded and the model built, as a bare
assertion inside Lightning, or not at all (a zero learning rate trains nothing).
Each rule names a dotted key; a key the config does not have is skipped, so the
same rules serve train.py, eval.py and visualize.py. No torch import: this runs
before the heavy modules load.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nfvae.errors import UserError


class ConfigError(UserError, ValueError):
    """An option has a value of the wrong type or outside its range."""


@dataclass(frozen=True)
class Rule:
    key: str
    kind: str  # "int", "number", "limit" (an int count or a fraction in [0, 1]) or "moved"
    low: float | None = None
    strict: bool = False  # low is exclusive (> low) rather than inclusive (>= low)
    high: float | None = None
    nullable: bool = False
    moved_to: str | None = None  # kind "moved": the key's new place; it must stay null

    def check(self, value: Any) -> str | None:
        """None if ``value`` is acceptable, else the complaint."""
        if self.kind == "moved":
            return None if value is None else (
                f"{self.key} is now {self.moved_to}: pass {self.moved_to}={value!r} instead")
        if value is None:
            return None if self.nullable else f"{self.key} must be set, got null"
        if self.kind == "limit":
            return self._check_limit(value)
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "int" and not (is_number and isinstance(value, int)):
            return f"{self.key} must be an integer, got {value!r}"
        if not is_number:
            return f"{self.key} must be a number, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{self.key} must be finite, got {value!r}"
        if self.low is not None:
            if self.strict and not value > self.low:
                return f"{self.key} must be > {self.low:g}, got {value!r}"
            if not self.strict and not value >= self.low:
                return f"{self.key} must be >= {self.low:g}, got {value!r}"
        if self.high is not None and not value <= self.high:
            return f"{self.key} must be <= {self.high:g}, got {value!r}"
        return None

    def _check_limit(self, value: Any) -> str | None:
        # Lightning's limit_*_batches: a number of batches (int >= 0) or a fraction.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{self.key} must be a number of batches or a fraction, got {value!r}"
        if isinstance(value, int) and value >= 0:
            return None
        if isinstance(value, float) and 0.0 <= value <= 1.0:
            return None
        return (f"{self.key} must be an integer >= 0 (batches) or a fraction in [0, 1], "
                f"got {value!r}")


def _int(key, low=None, **kw):
    return Rule(key, "int", low, **kw)


def _number(key, low=None, **kw):
    return Rule(key, "number", low, **kw)


RULES: tuple[Rule, ...] = (
    _int("seed"),
    _int("trainer.max_epochs", -1, nullable=True),
    _int("trainer.max_steps", -1, nullable=True),
    _int("trainer.log_every_n_steps", 1, nullable=True),
    _int("trainer.check_val_every_n_epoch", 1, nullable=True),
    _int("trainer.num_sanity_val_steps", -1, nullable=True),
    _int("trainer.accumulate_grad_batches", 1),
    _int("trainer.num_nodes", 1),
    Rule("trainer.limit_train_batches", "limit", nullable=True),
    Rule("trainer.limit_val_batches", "limit", nullable=True),
    Rule("trainer.limit_test_batches", "limit", nullable=True),
    _number("trainer.gradient_clip_val", 0, nullable=True),
    _number("optimizer.lr", 0, strict=True),
    _number("optimizer.weight_decay", 0),
    _int("data.batch_size", 1),
    _int("data.eval_batch_size", 1),
    _int("model.latent_dim", 1),
    Rule("model.num_samples", "moved", moved_to="objective.num_samples"),
    Rule("model.compile", "moved", moved_to="training.compile"),
    _int("objective.num_samples", 1),
    _int("flow.num_layers", 0),
    _number("objective.beta_start", 0),
    _int("objective.warmup_epochs", 0),
    _int("test.num_samples", 1),
    _number("training.min_free_mb", 0),
    _int("eval.num_samples", 1, nullable=True),  # null: the model kind's default
    _int("eval.batch_size", 1),
    _int("eval.max_batch_samples", 1),
    _int("task.max_examples", 1, nullable=True),
    _int("task.bins", 1),
    _int("dpi", 1),
    _int("num_points", 1),
)


_ABSENT = object()


def _lookup(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    if value is _ABSENT:
        return False, None
    if OmegaConf.is_config(value):  # a group where a scalar was expected
        value = OmegaConf.to_container(value, resolve=True)
    return True, value


#: Options that moved, with their new place: an old command line gets told where.
MOVED = {
    "ood": "the ood.* options of eval.py moved into task=ood's config (conf/task/ood.yaml): "
           "ood.max_examples is task.max_examples, ood.bins is task.bins, and "
           "+ood.data.<key>=<value> is +task.other_data.<key>=<value>",
}


def problems(cfg: DictConfig, rules: Iterable[Rule] = RULES) -> list[str]:
    """Every rule ``cfg`` breaks, one sentence each."""
    found = [message for key, message in MOVED.items() if key in cfg]
    for rule in rules:
        present, value = _lookup(cfg, rule.key)
        if present:
            complaint = rule.check(value)
            if complaint:
                found.append(complaint)
    return found


def validate(cfg: DictConfig, rules: Iterable[Rule] = RULES) -> None:
    """Raise ``ConfigError`` naming every invalid option of ``cfg``."""
    found = problems(cfg, rules)
    if found:
        raise ConfigError("; ".join(found))
