"""The benchmark scripts still run and account for their time (their figures go to README).
They are run for a few steps only: nothing here is timed."""

import importlib.util
import json
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import write_mnist

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str, args: list, monkeypatch, capsys) -> tuple[int, str, str]:
    """A benchmark script run as __main__ in this process: (exit code, stdout, stderr). The
    processes it starts itself (ptrain runs timed from launch) stay real; its own start, torch's
    import, is the part that proves nothing."""
    monkeypatch.syspath_prepend(str(BENCH))  # its `import bench_data`
    monkeypatch.setattr(sys, "argv", [str(BENCH / name), *map(str, args)])
    capsys.readouterr()
    try:
        runpy.run_path(str(BENCH / name), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_throughput_measures_all_three_contenders(tmp_path, monkeypatch, capsys):
    write_mnist(tmp_path / "mnist")  # 512 training images: 8 batches of 64
    out = tmp_path / "t.json"
    code, stdout, err = _script("throughput.py", ["--models", "lenet", "--steps", "3", "--rounds",
                                                  "1", "--mnist-dir", tmp_path / "mnist", "--json",
                                                  out], monkeypatch, capsys)
    assert code == 0, err
    row = json.loads(out.read_text())["rows"][0]
    assert row["data"] == "real" and row["model"] == "lenet"
    assert min(row["classic"], row["ptrain"], row["ceiling"]) > 0
    assert row["ptrain_over_classic"] == pytest.approx(row["ptrain"] / row["classic"])
    assert "| lenet | 64 | mnist (real) |" in stdout


def test_throughputs_default_steps_fit_in_one_epoch_of_the_real_data(monkeypatch):
    """ptrain is timed by two log intervals of one epoch: a warm-up and the timed one."""
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("throughput", BENCH / "throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    from bench_data import SIZES
    for device, steps in throughput.STEPS.items():
        for model, (dataset, batch) in throughput.CASES.items():
            assert 2 * steps[model] <= SIZES[dataset][0] // batch, (device, model)


@pytest.mark.slow
def test_time_to_accuracy_splits_the_time_from_launch(tmp_path):
    preset = tmp_path / "fake.toml"
    preset.write_text('dataset = "fake"\nepochs = 3\nlog_interval = 1000\n')
    out = tmp_path / "tta.json"
    done = subprocess.run([sys.executable, BENCH / "time_to_accuracy.py", preset, "--target", "0.3",
                           "--json", out], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    run = json.loads(out.read_text())["runs"][0]
    assert run["reached"] and run["acc"] >= 0.3 and run["epoch"] <= 3
    parts = run["parts"]
    assert (
        all(v >= -0.01 for v in parts.values()) and parts["training"] > 0 and parts["start-up"] > 0
    )
    assert sum(parts.values()) == pytest.approx(run["seconds"])
    assert run["seconds"] < run["command_s"]
    assert "1/1 runs reached 30%" in done.stdout


def test_gpu_check_output_checker(tmp_path):
    """check_gpu_out.py (run after the GPU check, and after its CPU dry run in CI) passes a folder
    the lent machine sends back whole with every section, and names what is wrong otherwise."""
    spec = importlib.util.spec_from_file_location("check_gpu_out", BENCH / "check_gpu_out.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    summary = "\n\n".join(f"{heading}\n\nstatus: ok" for heading in check.SECTIONS)
    (tmp_path / "summary.md").write_text(summary)
    (tmp_path / "results.jsonl").write_text('{"step": "env"}\n')
    assert check.problems(tmp_path) == []
    (tmp_path / "summary.md").write_text(summary.replace("## 6. CIFAR-10", "## six"))
    for i in range(7):
        (tmp_path / f"log{i}.txt").write_text("x")
    (tmp_path / "runs").mkdir()
    done = subprocess.run([sys.executable, BENCH / "check_gpu_out.py", tmp_path],
                          capture_output=True, text=True)
    assert done.returncode == 1
    for problem in ("runs: not a plain file", "10 entries, more than 8", "no section '## 6."):
        assert problem in done.stdout, done.stdout


def test_own_images_says_when_predict_misses_other_images_than_eval_lists(tmp_path,
                                                                          monkeypatch):
    """own_images.py (the GPU check's step 7; the dry run in CI runs it whole): predict's wrong
    answers, judged by the folder each image came from, must be the rows eval --errors lists,
    and the summary says FAILED when they are not."""
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_sections
    import own_images
    (tmp_path / "test/cat").mkdir(parents=True)
    answers = "image,class,prob\n" + "".join(f"{tmp_path}/test/cat/{i}.png,{c},0.9\n"
                                             for i, c in enumerate(["cat", "dog", "cat"]))
    rows = [{}, {"out": json.dumps({"acc": 2 / 3, "total": 3, "precision": "bfloat16"})},
            {"out": answers}]
    errors = tmp_path / "errors.csv"
    for listed, agree in (("1", True), ("2", False)):
        errors.write_text(f"image,true,predicted\n{tmp_path}/test/cat/{listed}.png,cat,dog\n")
        said = own_images.agreement(rows, errors, tmp_path)
        assert said["agree"] is agree and said["predict_acc"] == pytest.approx(2 / 3)
    (tmp_path / "own.json").write_text(json.dumps({**said, "rows": [
        {"command": "ptrain train", "rc": 0, "seconds": 9.5}]}))
    a = SimpleNamespace(json=str(tmp_path / "own.json"), what="x", rc=0, seconds=10.0,
                        timeout=60.0)
    gpu_sections.cmd_own_images(a, gpu_sections.Out(str(tmp_path)))
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("status: FAILED (predict and eval disagree) (10 s of 60 s)")
    assert "| `ptrain train` | ok | 9.5 |" in summary and "the same images wrong: False" in summary
    for tuned, status in (({}, "FAILED (the fine-tuning run)"), (
            {"fine_tune": {"test_acc": 0.5, "images_per_s": 900.0, "train_s_total": 4.0}}, "ok")):
        (tmp_path / "own.json").write_text(json.dumps({"agree": True, **tuned}))
        (tmp_path / "summary.md").unlink()
        gpu_sections.cmd_own_images(a, gpu_sections.Out(str(tmp_path)))
        summary = (tmp_path / "summary.md").read_text()
        assert summary.startswith(f"status: {status} (10 s of 60 s)")
    assert "--unfreeze-at 1, 64 px, 2 epochs): test acc 50.00%, 900 img/s, 4.0 s" in summary


@pytest.mark.slow
def test_folder_loop_compares_the_classic_loop_with_ptrain_cold_and_cached(tmp_path, monkeypatch,
                                                                           capsys):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for cls in ("a", "b"):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / "imgs" / split / cls / f"{i:02d}.png")
    out = tmp_path / "out.json"
    monkeypatch.setenv("PTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    code, stdout, err = _script("folder_loop.py", [tmp_path / "imgs", "--epochs", "1", "--workers",
                                                   "0", "--limit", "8", "--json", out],
                                monkeypatch, capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    rows = {c["name"]: c for c in result["contenders"]}
    assert list(rows) == ["classic W=0", "ptrain cold", "ptrain cached"]
    assert result["train_size"] == 16 and result["test_size"] == 8  # --limit 8 of 12 and of 4
    for row in rows.values():
        assert len(row["images_per_s"]) == 1 and min(row["images_per_s"]) > 0
        assert 0 <= row["test_acc"] <= 1
    assert rows["ptrain cold"]["images"] == rows["ptrain cached"]["images"] == 24
    assert rows["ptrain cached"]["data_s"] > 0 and rows["classic W=0"]["data_s"] is None
    assert "| contender | data (decode or reload) s |" in stdout
    for name in rows:
        assert f"| {name} |" in stdout


def test_jpeg_decode_compares_the_full_decode_with_ptrains_and_says_how_far_apart(
        tmp_path, monkeypatch, capsys):
    from PIL import Image
    y, x = np.mgrid[0:300, 0:400]
    pixels = np.stack([x * 255 // 400, y * 255 // 300, (x + y) % 256], -1).astype(np.uint8)
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    Image.fromarray(pixels).save(tmp_path / "photos" / "a.jpg", quality=90)
    Image.fromarray(pixels[:, ::-1]).save(tmp_path / "photos" / "sub" / "b.JPEG", quality=90)
    out = tmp_path / "rows.json"
    code, stdout, err = _script("jpeg_decode.py", [tmp_path / "photos", "--sizes", "32,300",
                                                   "--rounds", "2", "--json", out],
                                monkeypatch, capsys)
    assert code == 0, err
    assert stdout.startswith("2 JPEG files of 400x300 to 400x300 px, median of 2 rounds")
    rows = json.loads(out.read_text())["rows"]
    assert [r["side"] for r in rows] == [32, 300]
    assert all(r["full_ms"] > 0 and r["ptrain_ms"] > 0 for r in rows)
    assert 0 < rows[0]["mean_abs_diff"] < 3  # 32 px: decoded at 1/8 scale, and alike
    assert rows[1]["max_abs_diff"] == 0  # 300 px from 400x300: nothing to scale, the same
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(sys, "argv", ["jpeg_decode.py", str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="no .jpg or .jpeg file under"):
        runpy.run_path(str(BENCH / "jpeg_decode.py"), run_name="__main__")


def test_recipe_costs_measures_every_stage_and_both_checkpointing_sides(tmp_path, monkeypatch,
                                                                        capsys):
    out = tmp_path / "c.json"
    code, stdout, err = _script("recipe_costs.py", ["--images", "600", "--batch", "200",
                                                    "--rounds", "1", "--ckpt-batch", "2",
                                                    "--ckpt-steps", "1", "--precision-batch",
                                                    "1", "--precision-models", "lenet",
                                                    "--json", out],
                                monkeypatch, capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert set(result["augment_img_s"]) >= {"crop-flip", "randaugment", "mixup 0.8"}
    kept = result["grad_checkpointing"]
    assert kept["checkpointed"]["kept_mb"] < kept["plain"]["kept_mb"]
    assert "torchvision image by image" in stdout
    ms = result["precision_ms_per_image"]
    assert set(ms) == {"lenet"} and all(set(v) == {"32", "bf16", "16"} and
                                                    min(v.values()) > 0 for v in ms.values())


@pytest.mark.slow
def test_sweep_jobs_times_a_sweep_and_counts_its_trials(tmp_path, monkeypatch, capsys):
    pytest.importorskip("optuna")
    code, stdout, err = _script("sweep_jobs.py", ["--trials", "1", "--jobs", "1", "--pruners",
                                                  "none", "--", "--dataset", "fake", "--epochs",
                                                  "1"], monkeypatch, capsys)
    assert code == 0, err
    [row] = [line.split(" | ") for line in stdout.splitlines() if line.startswith("| 1 ")]
    assert row[1:6] == ["none", row[2], "1", "0", "0"] and float(row[2]) > 0
    assert row[7] == "1.00x"  # --jobs 1 is the reference


@pytest.mark.slow
def test_trial_start_times_a_fresh_and_a_warm_run_side_by_side(tmp_path, monkeypatch, capsys):
    code, stdout, err = _script("trial_start.py", ["--rounds", "1", "--", "--dataset", "fake",
                                                   "--epochs", "0.1"], monkeypatch, capsys)
    assert code == 0, err
    [row] = [line.split(" | ") for line in stdout.splitlines() if line.startswith("| 1 |")]
    assert float(row[1]) > 0 and row[2].endswith("(server start)") and float(row[4][:-2]) > 0
    assert "median of rounds 1-1: fresh" in stdout
