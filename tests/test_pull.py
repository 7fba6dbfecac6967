"""docs/models.md, followed once: a publisher runs a small DVC experiment and publishes it with DVC's own
`dvc exp push` (its Git ref to a bare repo, its outputs to a DVC remote folder); that folder is then
served read-only over HTTP on loopback, as DVC's example projects serve theirs, and a user with no
write access gets one model (`dvc get`, `dvc artifacts get`, or a clone and `dvc pull`), loads it with
plain Keras, predicts with it, and sees that nothing would retrain."""

from __future__ import annotations

import contextlib
import csv
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.test_pipeline import copy_checkout, sh

pytestmark = pytest.mark.slow

EXPERIMENT, RUN, ARTIFACT = "gray28_cnn1", "gray28-tiny", "gray28-cnn1"  # the smallest model: ~45 s here
GIT = ("git", "-c", "user.email=t@t", "-c", "user.name=t")


@contextlib.contextmanager
def served_read_only(folder: Path) -> Iterator[str]:
    """``python -m http.server`` on ``folder``, on a free loopback port: a static file server, which
    answers GET and HEAD only (no upload can reach the folder through it)."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(folder)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        banner = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        assert " port " in banner, f"http.server did not start: {banner!r}"
        yield f"http://127.0.0.1:{banner.split(' port ')[1].split()[0]}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def locked_model_md5(repo: Path) -> str:
    stage = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][f"train@{EXPERIMENT}"]
    return next(out["md5"] for out in stage["outs"] if out["path"] == f"models/{EXPERIMENT}")


def publish(repo: Path, url: str, storage: Path, bare: Path) -> None:
    """The publisher: the read-only URL as the project's default remote (committed, as the example projects
    do), the same storage as a writable remote of their own (--local), one experiment, `dvc exp push`."""
    sh("dvc", "remote", "add", "-d", "public", url, cwd=repo)
    sh(*GIT, "commit", "-qm", "the read-only DVC remote users pull from", ".dvc/config", cwd=repo)
    sh("dvc", "remote", "add", "--local", "storage", str(storage), cwd=repo)
    sh("dvc", "exp", "run", "-n", RUN, f"train@{EXPERIMENT}", cwd=repo, timeout=1200)
    sh("git", "clone", "-q", "--bare", str(repo), str(bare), cwd=repo.parent)
    sh("git", "remote", "add", "origin", str(bare), cwd=repo)
    out = sh("dvc", "exp", "push", "-r", "storage", "origin", RUN, cwd=repo)
    assert f"Pushed experiment {RUN} to Git remote 'origin'" in out, out


def test_one_published_model_pulls_from_a_read_only_http_remote(tmp_path):
    repo, storage, bare = copy_checkout(tmp_path / "repo"), tmp_path / "storage", tmp_path / "origin.git"
    with served_read_only(storage) as url:
        publish(repo, url, storage, bare)
        model_md5 = locked_model_md5(repo)
        with pytest.raises(urllib.error.HTTPError, match="501"):  # the served folder takes no uploads
            urllib.request.urlopen(urllib.request.Request(url + "/x", data=b"x", method="PUT"), timeout=30)

        # 1. the model alone, no clone: DVC finds the experiment by name in the Git repo's refs
        sh("dvc", "get", str(bare), f"models/{EXPERIMENT}", "--rev", RUN, "-o", str(tmp_path / "got"), cwd=tmp_path)
        assert (tmp_path / "got/model.keras").read_bytes() == (repo / f"models/{EXPERIMENT}/model.keras").read_bytes()

        # 2. as a model-registry version: a Git tag <artifact>@v<semver> on the experiment's commit
        run_commit = exp_commit(repo)
        sh(*GIT, "tag", "-a", f"{ARTIFACT}@v0.1.0", run_commit, "-m", RUN, cwd=repo)
        sh("git", "push", "-q", "origin", f"{ARTIFACT}@v0.1.0", cwd=repo)
        art = tmp_path / "artifact"
        sh("dvc", "artifacts", "get", str(bare), ARTIFACT, "--rev", "v0.1.0", "-o", str(art), cwd=tmp_path)
        assert (art / "model.keras").read_bytes() == (tmp_path / "got/model.keras").read_bytes()

        # 3. a fresh clone: the experiment's Git ref, then that one model
        clone = tmp_path / "clone"
        sh("git", "clone", "-q", str(bare), str(clone), cwd=tmp_path)
        sh("dvc", "exp", "pull", "--no-cache", "origin", RUN, cwd=clone)
        sh("dvc", "exp", "branch", RUN, RUN, cwd=clone)
        sh("git", "checkout", "-q", RUN, cwd=clone)
        sh("dvc", "pull", f"models/{EXPERIMENT}", cwd=clone)
        assert locked_model_md5(clone) == model_md5
        assert not (clone / "data/prepared/gray28").exists()  # one model, none of the data

        loads_with_plain_keras(clone / f"models/{EXPERIMENT}/model.keras", tmp_path)
        predicts(clone, tmp_path)

        # nothing retrains: with the stage's inputs pulled too, DVC finds every stage up to train@ unchanged
        sh("dvc", "pull", "--with-deps", f"train@{EXPERIMENT}", cwd=clone)
        assert "Data and pipelines are up to date." in sh(
            "dvc", "status", "--with-deps", f"train@{EXPERIMENT}", cwd=clone
        )
        out = sh("dvc", "repro", f"train@{EXPERIMENT}", cwd=clone)
        assert "Running stage" not in out and f"Stage 'train@{EXPERIMENT}' didn't change" in out, out


def exp_commit(repo: Path) -> str:
    """The commit `dvc exp run -n RUN` made, from its ref refs/exps/<baseline[:2]>/<baseline[2:]>/RUN."""
    refs = sh("git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/", cwd=repo).splitlines()
    return next(line.split()[0] for line in refs if line.endswith(f"/{RUN}"))


def loads_with_plain_keras(model: Path, cwd: Path) -> None:
    """keras.models.load_model in a Python that cannot import the project (-I, run outside it)."""
    script = (
        "import importlib.util, sys, keras\n"
        "assert importlib.util.find_spec('stages') is None\n"
        "m = keras.models.load_model(sys.argv[1])\n"
        "print('input', tuple(m.input_shape), 'output', tuple(m.output_shape))\n"
    )
    assert "input (None, 28, 28, 1) output (None, 10)" in sh(sys.executable, "-I", "-c", script, str(model), cwd=cwd)


def predicts(clone: Path, tmp_path: Path) -> None:
    image = tmp_path / "coat.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8))
    out = tmp_path / "predictions"
    sh(sys.executable, "-m", "stages.tools.predict", EXPERIMENT, str(image), "--out", str(out), cwd=clone)
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["file"].endswith("coat.png") and not rows[0]["error"], rows
    assert 0 < float(rows[0]["prob1"]) <= 1 and rows[0]["class1"], rows
