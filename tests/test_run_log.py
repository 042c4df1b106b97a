"""The run folder keeps its own log, and a start prints nothing the user cannot act on.

Each test runs the real scripts as a user does (a subprocess, Hydra's own logging)."""

from __future__ import annotations

import json

import pytest

from cli_support import run_script

# The shipped defaults, shortened: two epochs of five batches.
SHORT = ["trainer.max_epochs=2", "trainer.limit_train_batches=5"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("short")
    run = cwd / "run"
    result = run_script("train.py", *SHORT, f"hydra.run.dir={run}", cwd=cwd)
    assert result.returncode == 0, result.output
    return cwd, run, result


def test_train_log_holds_lightning_nfvae_and_the_test_table(short_run):
    _, run, _ = short_run
    log = (run / "train.log").read_text()
    assert "GPU available" in log and "`Trainer.fit` stopped: `max_epochs=2` reached" in log
    assert "Seed set to 42" in log
    # nfvae's own message and the test metrics table, with its values.
    assert "[nfvae.training][INFO] - test metrics of" in log
    for metric in ("test/nll", "test/neg_elbo", "test/bpd"):
        assert any(line.startswith(metric + " ") for line in log.splitlines()), metric


def test_start_prints_no_advert_and_no_leafspec_warning(short_run):
    _, run, result = short_run
    for text in (result.output, (run / "train.log").read_text()):
        assert "litlogger" not in text and "Tip:" not in text
        assert "LeafSpec" not in text


def test_failed_run_keeps_its_error_in_train_log(tmp_path):
    run = tmp_path / "run"
    result = run_script("train.py", "optimizer.lr=1e6", *SHORT, f"hydra.run.dir={run}",
                        cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.output
    assert "non-finite training loss" in result.stderr
    log = (run / "train.log").read_text()
    assert "[ERROR] - train.py: error: non-finite training loss at global step" in log
    assert "GPU available" in log  # the run's earlier messages are there too


@pytest.mark.slow
def test_eval_and_visualize_keep_their_logs_and_eval_json_is_absolute(short_run):
    cwd, run, _ = short_run
    relative = (run / "checkpoints" / "last.ckpt").relative_to(cwd)
    result = run_script("eval.py", f"ckpt_path={relative}", "eval.num_samples=10",
                        "hydra.run.dir=eval_run", cwd=cwd)
    assert result.returncode == 0, result.output
    written = json.loads((cwd / "eval_run" / "eval.json").read_text())
    assert written["checkpoint"] == str((cwd / relative).resolve())
    log = (cwd / "eval_run" / "eval.log").read_text()
    assert f'"nll": {written["nll"]}' in log and "wrote" in log

    result = run_script("visualize.py", f"ckpt_path={relative}", "out=figures",
                        "hydra.run.dir=viz_run", cwd=cwd)
    assert result.returncode == 0, result.output
    log = (cwd / "viz_run" / "visualize.log").read_text()
    assert "figures/layers.gif" in log and (cwd / "figures" / "layers.gif").is_file()
