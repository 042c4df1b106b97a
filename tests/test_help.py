"""``--help`` answers fast and lists only what a user of that command can pick."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from cli_support import ROOT, run_script


def groups_section(help_text: str) -> dict[str, list[str]]:
    section = help_text.split("== Configuration groups ==")[1].split("== Config ==")[0]
    found = {}
    for line in section.splitlines():
        match = re.fullmatch(r"([\w/]+): (.+)", line.strip())
        if match:
            found[match.group(1)] = match.group(2).split(", ")
    return found


def test_train_help_lists_the_pickable_groups_only(tmp_path):
    result = run_script("train.py", "--help", cwd=tmp_path)
    print(f"train.py --help took {result.seconds:.2f} s")  # measured, not asserted
    assert result.returncode == 0, result.output
    groups = groups_section(result.stdout)
    assert {"data", "flow", "model", "model/likelihood", "optimizer", "trainer",
            "experiment"} <= set(groups)
    assert "planar" in groups["flow"] and "digits" in groups["data"]
    assert "toy/u1" in groups["experiment"] and "sylvester/omniglot_iaf" in groups["experiment"]
    assert "task" not in groups  # eval.py's
    assert not any(option.rsplit("/", 1)[-1].startswith("_")
                   for options in groups.values() for option in options)
    listing = result.stdout.split("== Config ==")[0]
    for private in ("sylvester/_protocol", "toy/_energy", "toy/_samples"):
        assert private not in listing and private.split("/")[1] not in listing.split()
    assert not (tmp_path / "outputs").exists()


def test_eval_help_lists_its_task_group(tmp_path):
    result = run_script("eval.py", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.output
    groups = groups_section(result.stdout)
    assert groups["task"] == ["diagnose", "nll", "ood"] and "flow" not in groups


@pytest.mark.parametrize("script", ["train.py", "eval.py", "visualize.py"])
def test_help_does_not_import_torch(script, tmp_path):
    # What makes --help slow is importing torch and Lightning before Hydra answers.
    probe = (f"import runpy, sys; sys.argv = [{script!r}, '--help']\n"
             f"try:\n    runpy.run_path({str(ROOT / script)!r}, run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('TORCH_LOADED' if 'torch' in sys.modules else 'TORCH_NOT_LOADED')")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert "TORCH_NOT_LOADED" in done.stdout, done.stdout[-500:] + done.stderr[-2000:]
