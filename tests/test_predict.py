"""The prediction command on a trained classifier: top-k per image, CSV, per-file errors."""

import csv

import cv2
import numpy as np

from stages.io import write_json
from stages.models import build
from stages.predict import predict


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
