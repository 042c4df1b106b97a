"""benchmarks/bench_gpu.py on the CPU: the CUDA-only levers are skipped with their reason,
and the others run (compiled ones with aot_eager, to keep it quick) into the table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_gpu_cpu_path_prints_the_table(data_dir):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device", "cpu",
         "--rounds", "1", "--steps", "3", "--warmup", "1", "--is-images", "2",
         "--backend", "aot_eager"],
        env={**os.environ, "NFVAE_DATA_DIR": str(data_dir)}, cwd=ROOT,
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "skipped nfvae-tf32: TF32 is a mode of CUDA matmuls" in out
    assert "skipped nfvae-reduce-overhead: reduce-overhead records CUDA graphs" in out
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines()
            if line.startswith(("| plain-", "| nfvae-"))}
    assert set(rows) == {"plain-eager", "nfvae-eager", "nfvae-fused-adam", "nfvae-compile",
                         "nfvae-bf16"}
    assert rows["plain-eager"][1].strip().startswith("1.00")  # the baseline against itself
    for name, cells in rows.items():
        assert float(cells[0]) > 0, name  # samples/s
        assert float(cells[2]) > 0, name  # IS-NLL seconds
        assert 50 < float(cells[-1]) < 2000, name  # 2 test images, an untrained model
