"""`tenfold bench`, and the benchmark harness in its dry mode (the real runs live in BENCHMARKS.md)."""
import os
import re
import subprocess
import sys

import pytest

from helpers import REPO, assert_one_line_error, run_cli

sys.path.insert(0, str(REPO / "benchmarks"))
import lenet  # noqa: E402


def test_bench_prints_the_cpu_row_and_the_seeds_reference_rows():
    result = run_cli("bench", "--epochs", 2, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    rows = {line.split("  ")[0].strip(): line for line in result.stdout.splitlines()}
    cpu = next(line for name, line in rows.items() if name.startswith("CPU"))
    laptop, k80 = rows["seed: laptop CPU"], rows["seed: AWS Tesla K80"]
    numbers = lambda line: [float(x.replace(",", "")) for x in re.findall(r"[\d,]+\.\d+|[\d,]{3,}", line)]  # noqa
    cpu_s, cpu_ips = numbers(cpu)[:2]
    assert 0 < cpu_s < 60 and cpu_ips == pytest.approx(45000 / cpu_s, rel=0.5)
    assert numbers(laptop)[0] == 42.0 and laptop.rstrip().endswith("1.0x")
    assert numbers(k80)[0] == 4.5 and k80.rstrip().endswith("9.3x")
    assert cpu.split()[-2] == "1.00x"  # this CPU against itself


def test_bench_on_a_missing_gpu_is_a_one_line_error():
    assert_one_line_error(run_cli("bench", "--device", "cuda"), "no CUDA GPU")


def gpu_script(parts: str) -> subprocess.CompletedProcess:
    """benchmarks/gpu.sh --dry with only `parts` (its PARTS setting)."""
    return subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--dry"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PARTS": parts})


def test_gpu_script_dry_run_prints_both_peers():
    result = gpu_script("lenet distributed")  # each part in a test of its own: the suite's workers share them
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\| tenfold \| 256 \(default\) \| [\d.]+ \| [\d,]+ \| [\d.]+% \| 1\.00x \|$", result.stdout, re.M)
    assert re.search(r"^\| tutorial \| 128 \| [\d.]+ \| [\d,]+ \| [\d.]+% \| [\d.]+x \|$", result.stdout, re.M)
    assert "fp32 floor" in result.stdout
    assert re.search(r"^\| lenet5 \| 1 worker \| [\d.]+ \| [\d.]+x \| [\d.]+% \|$", result.stdout, re.M)  # DDP path
    assert "| bf16 |" not in result.stdout and "| fast-tiny |" not in result.stdout


def test_gpu_script_dry_run_times_the_presets_from_launch():
    result = gpu_script("presets")
    assert result.returncode == 0, result.stderr
    for preset in ("lenet5", "fast"):  # a preset on its own net, and one swapped to airnet_tiny, timed from launch
        assert re.search(rf"^\| {preset} \| 1 \| \d+ \| [\d.]+% \|", result.stdout, re.M), result.stdout
    for variant in ("fast:--compile", "fast:--precision fp16"):  # and the GPU run's variants of `fast`
        assert re.search(rf"^\| {variant} \| 1 \| \d+ \| [\d.]+% \|", result.stdout, re.M), result.stdout


def test_gpu_script_runs_only_the_parts_asked_for():
    result = gpu_script("precision")
    assert result.returncode == 0, result.stderr
    for variant in ("fp32", "bf16", "fp16", "bf16\\+compile"):  # the step in each arithmetic
        assert re.search(rf"^\| {variant} \| [\d.]+ \| [\d,]+ \| [\d.]+x \| [\d.]+ \|$", result.stdout, re.M)
    assert "tutorial" not in result.stdout and "| lenet5 |" not in result.stdout and "| fast |" not in result.stdout
    wrong = gpu_script("precision gpus")
    assert wrong.returncode == 2 and "unknown part 'gpus'" in wrong.stderr and "| bf16 |" not in wrong.stdout


def test_gpu_script_refuses_without_a_gpu():
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh")], capture_output=True, text=True)
    assert result.returncode != 0 and "no CUDA GPU" in result.stderr


def test_lenet_training_flops_match_the_hand_count():
    # conv1 32*32*6*75 + conv2 16*16*16*150 + 1024*120 + 120*84 + 84*10 multiply-adds, x2 x3.
    macs = 32 * 32 * 6 * 75 + 16 * 16 * 16 * 150 + 1024 * 120 + 120 * 84 + 84 * 10
    assert lenet.training_flops_per_image() == 6 * macs


def test_summary_takes_the_median_of_epochs_2_on_over_rounds():
    epoch = lambda e, s, acc: {"epoch": e, "seconds": s, "images_per_s": 100 / s, "val_accuracy": acc}  # noqa
    runs = {"tenfold": [[epoch(1, 9.0, .3), epoch(2, 2.0, .4), epoch(3, 4.0, .5)],
                        [epoch(1, 9.0, .3), epoch(2, 3.0, .4), epoch(3, 5.0, .7)]]}
    row = lenet.summarise(runs, 3)["tenfold"]
    assert row["median_epoch_s"] == 3.5 and row["val_accuracy"] == pytest.approx(0.6)


def test_lenet_benchmark_caps_every_library_at_avx2_and_loads_the_cores():
    assert lenet.ISA_ENV["avx2"] == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                     "MKL_ENABLE_INSTRUCTIONS": "AVX2", "TENFOLD_CPU_ISA": "avx2"}
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "lenet.py"), "--dry", "--isa", "avx2",
                             "--load", "1", "--peers", "tenfold-quiet,tenfold"], capture_output=True, text=True,
                            timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "every peer capped at AVX2" in result.stdout and "1 busy single-threaded process" in result.stdout
    assert re.search(r"^\| tenfold-quiet \| 256 \(default\) \| [\d.]+ \|", result.stdout, re.M)
    assert subprocess.run(["pgrep", "-f", "while True: pass"], capture_output=True).returncode == 1  # none left


def test_estimate_benchmark_dry_run_compares_estimate_and_measurement():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "estimate.py"), "--dry"], capture_output=True,
                            text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\| fast-tiny \| 1 \| \d+ s \| \d+ s \| [\d.]+ \|", result.stdout, re.M), result.stdout
