"""TensorBoard's scalar pages open on the training and validation curves.

The Time Series page sorts every card's tag in TensorBoard's natural order, groups the
cards by the tag's first segment and expands the first two groups; the Scalars page
lists and opens its groups the same way (``nfvae.tb_logger``). A run with the shipped
configuration must therefore put ``train`` and then ``val`` before every other group.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import tensorboard

from nfvae.training import train
from tests.tests_support import compare_tag_names, read_events, tensorboard_group_order

#: Tags that exercise every rule of the order: numbers by value, '/' and digits before
#: letters, upper before lower case, a group that is a prefix of another.
TRICKY_TAGS = ["train/loss", "val/neg_elbo", "val_x/a", "valid/b", "test/nll", "zz_test/nll",
               "viz/images/samples", "Val/a", "epoch", "layer_10/a", "layer_9/a",
               "a/b", "a_b/c", "a1/x", "a/1.5e3", "a/200", "diagnose/report", "images/x"]


def test_the_order_port_on_known_cases():
    assert compare_tag_names("layer_9", "layer_10") == -1     # numbers by value
    assert compare_tag_names("val/x", "val_x/y") == -1        # '/' before letters
    assert compare_tag_names("Val/x", "train/x") == -1        # upper case first
    assert compare_tag_names("val/a", "val/a") == 0
    assert tensorboard_group_order(["zz_test/nll", "val/kl", "viz/a", "train/loss"]) == [
        "train", "val", "viz", "zz_test"]


def _functions(source: str, start: int, names: list[str], window: int = 4000) -> str:
    """The JavaScript definitions of ``names`` and of the functions they call, taken
    from the module at ``start`` (a minified bundle reuses short names across modules,
    so only definitions within ``window`` characters of it count)."""
    found: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        begin = source.find(f"function {name}(", start, start + window)
        if begin < 0:
            continue  # a builtin, a method or a parameter
        depth, i = 0, source.index("{", begin)
        while True:
            depth += {"{": 1, "}": -1}.get(source[i], 0)
            i += 1
            if depth == 0:
                break
        found[name] = source[begin:i]
        todo += re.findall(r"(?<![\w.$])([A-Za-z_$][\w$]*)\(", found[name][len(name) + 9:])
    return "\n".join(found.values())


def test_the_port_gives_tensorboards_own_group_order():
    """The installed TensorBoard's Time Series grouping (its minified JavaScript), run
    by node on the same tags, lists the groups as the port does."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed; the port is checked on known cases only")
    webfiles = Path(tensorboard.__file__).parent / "webfiles.zip"
    source = zipfile.ZipFile(webfiles).read("index.js").decode()
    # groupCardIdWithMetdata: sort the cards by tag, then group by the first segment.
    match = re.search(r"function ([\w$]+)\(t\)\{let e=new Map,n=t\.slice\(\)\.sort\("
                      r"\(i,o\)=>([\w$]+)\(i\.tag,o\.tag\)\)", source)
    if match is None:
        pytest.skip(f"TensorBoard {tensorboard.__version__}'s Time Series grouping was "
                    "not found in its webfiles; update the pattern")
    script = _functions(source, match.start(), [match.group(1)]) + (
        f"\nconst tags = {json.dumps(TRICKY_TAGS)};"
        f"\nconsole.log(JSON.stringify({match.group(1)}(tags.map(tag => ({{tag}})))"
        ".map(g => g.groupName)));")
    result = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == tensorboard_group_order(TRICKY_TAGS)


def assert_opens_on_the_curves(run: Path) -> list[str]:
    events = read_events(run)
    tags = events.Tags()
    cards = tags["scalars"] + tags["images"] + tags["histograms"]  # Time Series' plugins
    time_series = tensorboard_group_order(cards)
    scalars_page = tensorboard_group_order(tags["scalars"])
    assert time_series[:2] == ["train", "val"], time_series
    assert scalars_page[:2] == ["train", "val"], scalars_page
    return time_series


def test_shipped_vae_run_opens_on_the_curves(compose_cfg, tmp_path):
    """The shipped configuration with every callback (figures, latent space, projector,
    diagnosis) and the test: one epoch, so every group is written."""
    cfg = compose_cfg(["trainer.max_epochs=1"])
    train(cfg)
    groups = assert_opens_on_the_curves(tmp_path / "run")
    assert {"viz", "zz_test"} <= set(groups)  # the groups that sorted first before


def test_shipped_toy_run_opens_on_the_curves(compose_cfg, tmp_path):
    cfg = compose_cfg(["experiment=toy/u1", "trainer.max_epochs=1", "data.steps_per_epoch=5",
                       "data.num_val=256", "data.num_test=256",
                       "callbacks.density.grid_size=30"])
    train(cfg)
    groups = assert_opens_on_the_curves(tmp_path / "run")
    assert {"viz", "zz_test"} <= set(groups)
