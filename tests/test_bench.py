"""The benchmark's pieces that run without a long measurement: the decode figures and the report."""

from pathlib import Path

from stages.tools.bench import bench_prepare, markdown, photo_folder


def test_prepare_rows_compare_project_plain_loop_and_one_thread(tmp_path: Path, monkeypatch):
    import stages.tools.bench as bench

    monkeypatch.setattr(bench, "SHARED", tmp_path / "no-shared")  # generated photos only
    monkeypatch.setattr(bench, "photo_folder", lambda root: photo_folder(root, n=24))
    (row,) = bench_prepare(tmp_path)
    assert row["images"] == 24 and row["data"].startswith("generated photos")
    assert row["ratio"] == round(row["project_per_s"] / row["plain_loop_per_s"], 2)
    assert row["all_cores_vs_one"] == round(row["project_per_s"] / row["project_one_thread_per_s"], 2)


def test_markdown_shows_every_target_section():
    result = {
        "machine": "2 CPU cores, no GPU",
        "data": "generated",
        "prepare": [{"data": "photos", "ratio": 4.5}],
        "decode_core_scaling": 1.5,
        "matmul_gflops": 300.0,
        "training": [{"model": "airbench", "pipeline_vs_ceiling": 0.99}],
        "knobs": [{"setting": "as trained", "images_per_s": 800, "vs_as_trained": 1.0}],
        "dvc": {"dvc_status_s": 3.0, "dvc_status_s_ok": True},
    }
    text = markdown(result)
    for heading in ("## Prepare", "## Training input pipeline", "## What moves compute efficiency", "## DVC overhead"):
        assert heading in text
    assert "(the machine's ceiling for `all_cores_vs_one`): 1.5x" in text
    assert "matmul: 300.0 GFLOP/s" in text
