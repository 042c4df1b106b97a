"""benchmarks/bench_peers.py runs end to end without the peers: a plain loop and nfvae
through train(cfg), in their own processes, and prints the table with ratios."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_peers_prints_the_table(data_dir):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_peers.py"), "--rounds", "1",
         "--steps", "3", "--warmup", "1", "--is-images", "2",
         "--only", "plain-amortized", "nfvae-amortized"],
        env={**os.environ, "NFVAE_DATA_DIR": str(data_dir)}, cwd=ROOT,
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "peers found: normflows" in out and "pythae" in out
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines()
            if line.startswith("| plain-") or line.startswith("| nfvae-")}
    assert set(rows) == {"plain-amortized", "nfvae-amortized"}
    plain, nfvae = rows["plain-amortized"], rows["nfvae-amortized"]
    assert plain[1].strip().startswith("1.00")  # the baseline against itself
    assert float(nfvae[0]) > 0 and float(nfvae[2]) > 0
    nll = float(nfvae[-3])  # 2 test images: an untrained model's NLL lies near 550 nats
    assert 50 < nll < 2000
