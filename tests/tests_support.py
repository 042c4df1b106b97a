"""Helpers shared by tests that need a composed config outside a fixture."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_default(overrides=(), output_dir="/tmp/nfvae-test-run"):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", *overrides])


def read_events(run_dir: Path) -> EventAccumulator:
    """Every event of a run folder's ``tensorboard/`` (all images kept), loaded."""
    events = EventAccumulator(str(Path(run_dir) / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    return events


# -- TensorBoard's order of tag groups -----------------------------------------------------------
# A port of the frontend's compareTagNames (tensorboard/webapp/util/string.ts; the same
# code in tf_backend for the Scalars page), checked against the installed TensorBoard's
# own JavaScript by tests/test_tag_order.py where node is available.

def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _is_break(c: str) -> bool:
    return c == "/" or _is_digit(c)


def _number_end(s: str, i: int) -> int:
    state = "natural"
    while i < len(s):
        c = s[i]
        if state == "natural":
            if c == ".":
                state = "real"
            elif c in "eE":
                state = "exponent_sign"
            elif not _is_digit(c):
                break
        elif state == "real":
            if c in "eE":
                state = "exponent_sign"
            elif not _is_digit(c):
                break
        elif state == "exponent_sign":
            if not _is_digit(c) and c not in "+-":
                break
            state = "exponent"
        elif state == "exponent" and not _is_digit(c):
            break
        i += 1
    return i


def _js_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")  # every comparison with NaN is false, as in JavaScript


def compare_tag_names(a: str, b: str) -> int:
    """-1, 0 or 1: TensorBoard's natural order of tags (numbers by value; ``/`` and
    digits before other characters; then character codes)."""
    i = j = 0
    while True:
        if i == len(a):
            return 0 if j == len(b) else -1
        if j == len(b):
            return 1
        if _is_digit(a[i]) and _is_digit(b[j]):
            si, sj = i, j
            i, j = _number_end(a, i + 1), _number_end(b, j + 1)
            x, y = _js_number(a[si:i]), _js_number(b[sj:j])
            if x < y:
                return -1
            if x > y:
                return 1
            continue
        if _is_break(a[i]):
            if not _is_break(b[j]):
                return -1
        else:
            if _is_break(b[j]):
                return 1
            if a[i] < b[j]:
                return -1
            if a[i] > b[j]:
                return 1
        i += 1
        j += 1


def tensorboard_group_order(tags) -> list[str]:
    """Tag groups (first segment) in the order TensorBoard's Time Series and Scalars
    pages list them: the tags in natural order, each group where its first tag falls."""
    from functools import cmp_to_key

    groups: list[str] = []
    for tag in sorted(set(tags), key=cmp_to_key(compare_tag_names)):
        group = tag.split("/", 1)[0]
        if group not in groups:
            groups.append(group)
    return groups
