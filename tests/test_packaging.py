"""The configs ship with the package: an installed nfvae trains from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nfvae.config import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_finds_the_repository_configs_in_a_checkout():
    # nfvae/conf is the top-level conf/, not a copy that could drift from it.
    assert CONF_DIR == ROOT / "nfvae" / "conf"
    assert CONF_DIR.resolve() == (ROOT / "conf").resolve()
    assert (CONF_DIR / "train.yaml").is_file() and (CONF_DIR / "task" / "ood.yaml").is_file()


def _source_tree(destination: Path) -> Path:
    """The files git would commit (tracked or not ignored), copied: building a wheel
    in the checkout would leave build/ and *.egg-info behind."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if name.startswith((".venv", "tests/")) or not source.exists():
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            target.write_bytes(source.read_bytes())
    return destination


@pytest.mark.slow
def test_installed_wheel_trains_with_python_dash_m_from_an_empty_folder(tmp_path):
    source = _source_tree(tmp_path / "src")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("nfvae-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    shipped = sorted(p.relative_to(site / "nfvae" / "conf").as_posix()
                     for p in (site / "nfvae" / "conf").rglob("*.yaml"))
    assert shipped == sorted(p.relative_to(ROOT / "conf").as_posix()
                             for p in (ROOT / "conf").rglob("*.yaml"))
    assert not (site / "nfvae" / "conf").is_symlink()

    # An empty folder, and the installed copy ahead of the checkout on the path.
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import nfvae; print(nfvae.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip() == str(site / "nfvae" / "__init__.py")
    run = subprocess.run(
        [sys.executable, "-m", "nfvae.train", "trainer.fast_dev_run=true",
         "callbacks=none", "hydra.run.dir=run"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (work / "run" / ".hydra" / "config.yaml").is_file()
    assert (work / "run" / "train.log").is_file()
    helped = subprocess.run([sys.executable, "-m", "nfvae.eval", "--help"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0 and "task" in helped.stdout and "ood" in helped.stdout
