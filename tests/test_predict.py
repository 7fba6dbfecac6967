"""The prediction command on a trained classifier: top-k per image, CSV, per-file errors."""

import csv

import cv2
import numpy as np
import pytest

from stages.core.cli import run
from stages.core.files import write_json
from stages.models import build
from stages.sources.readers.images import read_image_files
from stages.tools.predict import BATCH, main, parser, predict


def test_folder_of_mixed_files_gives_top_k_csv_and_per_file_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = build("cifar_gray_baseline", (32, 32, 1), 4)
    (tmp_path / "models/clf").mkdir(parents=True)
    model.save(tmp_path / "models/clf/model.keras")
    write_json(tmp_path / "models/clf/summary.json", {"classes": ["a", "b", "c", "d"]})
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(photos / "big.png"), rng.integers(0, 256, (300, 200, 3)).astype(np.uint8))
    cv2.imwrite(str(photos / "small.jpg"), rng.integers(0, 256, (20, 20)).astype(np.uint8))
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")

    failed = predict("clf", [str(photos)], top_k=2, out=tmp_path / "out")

    assert failed == 1
    rows = list(csv.DictReader(open(tmp_path / "out/predictions.csv")))
    assert [r["file"].split("/")[-1] for r in rows] == ["big.png", "broken.jpg", "small.jpg"]
    good = [r for r in rows if not r["error"]]
    assert all(r["class1"] in "abcd" and 0 <= float(r["prob1"]) <= 1 for r in good)
    assert float(good[0]["prob1"]) >= float(good[0]["prob2"])
    assert "broken.jpg" in rows[1]["error"]
    assert "broken.jpg" in capsys.readouterr().err


def test_batched_predictions_equal_one_image_at_a_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = build("cifar_gray_baseline", (32, 32, 1), 4)
    (tmp_path / "models/clf").mkdir(parents=True)
    model.save(tmp_path / "models/clf/model.keras")
    rng = np.random.default_rng(1)
    n = BATCH + 6  # two batches, the second a short one
    (tmp_path / "photos").mkdir()
    for i in range(n):
        size = tuple(int(v) for v in rng.integers(20, 80, 2))
        cv2.imwrite(str(tmp_path / "photos" / f"img{i:03d}.png"), rng.integers(0, 256, (*size, 3)).astype(np.uint8))
    calls = []
    original = type(model).predict

    def counted(self, x, *args, **kwargs):
        calls.append(len(x))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(type(model), "predict", counted)
    assert predict("clf", [str(tmp_path / "photos")], top_k=4, out=tmp_path / "out") == 0
    assert calls == [BATCH, 6]
    rows = list(csv.DictReader(open(tmp_path / "out/predictions.csv")))
    assert len(rows) == n
    for row in rows[:: max(1, n // 5)]:  # a few, one by one, decoded as predict decodes them
        one, ok, _ = read_image_files([row["file"]], (32, 32), color="gray", workers=1)
        probs = original(model, one.astype(np.float32), verbose=0)[0]
        assert ok == [0] and int(row["class1"]) == int(np.argmax(probs))
        assert float(row["prob1"]) == pytest.approx(float(probs.max()), abs=6e-5)  # the CSV's 4 decimals


@pytest.mark.parametrize("top_k", ["0", "-1"])
def test_cli_top_k_below_one_is_one_line_before_loading_anything(tmp_path, monkeypatch, capsys, top_k):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run(main, parser(), ["no_such_model", "x.jpg", "--top-k", top_k])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == f"error: --top-k {top_k}: must be 1 or more\n"
