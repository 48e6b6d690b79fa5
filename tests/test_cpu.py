"""The cores a run may use (affinity, cgroup quota), other processes' load, and the threads that follow it."""
import pytest

from helpers import make_tree, run_cli
from tenfold.training import cpu
from tenfold.training.checkpoint import load_checkpoint


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_tightest_on_the_way_to_the_root(tmp_path):
    write(tmp_path / "proc-cgroup", "0::/user.slice/job\n")
    write(tmp_path / "cg/user.slice/job/cpu.max", "max 100000\n")
    write(tmp_path / "cg/user.slice/cpu.max", "150000 100000\n")  # a parent's limit applies to the child
    assert cpu.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc-cgroup") == pytest.approx(1.5)
    write(tmp_path / "cg/user.slice/cpu.max", "max 100000\n")
    assert cpu.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc-cgroup") is None


def test_cgroup_v1_quota(tmp_path):
    write(tmp_path / "proc-cgroup", "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    write(tmp_path / "cg/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "300000\n")
    write(tmp_path / "cg/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert cpu.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc-cgroup") == pytest.approx(3.0)
    write(tmp_path / "cg/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n")  # unlimited
    assert cpu.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc-cgroup") is None
    assert cpu.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "missing") is None


@pytest.mark.parametrize("cpus,quota,want", [
    ({0, 1, 2, 3}, None, 4),   # the affinity mask, not os.cpu_count()
    ({0, 1, 2, 3}, 1.5, 1),    # docker --cpus 1.5 on four cores: one thread never throttled
    ({0, 1, 2, 3}, 2.0, 2),
    ({5}, 8.0, 1),             # taskset -c 5
    ({0, 1}, 0.2, 1),          # at least one
])
def test_usable_cores(cpus, quota, want):
    assert cpu.usable_cores(cpus, quota, default=64) == want
    assert cpu.usable_cores(cpus, quota, default=1) == 1  # PyTorch's count of physical cores caps it too


def test_a_quota_is_kept_while_other_tenants_are_busy():
    assert cpu.fewer_for(2, 64, 30.0) == 2   # docker --cpus 2 on a 64-CPU host, 30 busy elsewhere
    assert cpu.fewer_for(2, 2, 1.0) == 1 and cpu.fewer_for(2, 2, 0.3) == 2 and cpu.fewer_for(2, 2, 5.0) == 1


def test_glibc_keeps_freed_memory():
    import ctypes.util
    if ctypes.util.find_library("c") is None:
        pytest.skip("no C library to tune here")
    assert cpu.keep_freed_memory() is True


def stat(*cpus):
    """/proc/stat text: (busy, idle) jiffies per CPU."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"] + [f"cpu{i} {b} 0 0 {idle} 0 0 0 0 0 0" for i, (b, idle) in enumerate(cpus)]
    return "\n".join(lines + ["intr 1 2 3", "ctxt 42"])


def test_busy_cores_counts_other_processes_on_our_cpus_only():
    texts = iter([stat((100, 100), (100, 100), (0, 0)), stat((200, 100), (150, 150), (500, 0))])
    busy = cpu.busy_cores({0, 1}, 0.0, read=lambda: next(texts), sleep=lambda s: None)
    assert busy == pytest.approx(2 * 150 / 200)  # cpu0 fully busy, cpu1 half; cpu2 is not ours


def test_fewer_threads_while_others_are_busy_and_all_again_after():
    clock, own, texts, set_to = [0.0], [0.0], [stat((0, 0), (0, 0))], []
    adapt = cpu.AdaptiveThreads(2, {0, 1}, window=2.0, clock=lambda: clock[0], read=lambda: texts[0],
                                own_cpu=lambda: own[0], set_threads=set_to.append, threads=2)

    def window(total_busy_cores, our_cores):  # 2 s of training with this much busy time on our two CPUs
        b0, i0 = map(int, texts[0].splitlines()[1].split()[1:5:3])
        busy = int(100 * total_busy_cores)  # of 200 jiffies per CPU in the window, both CPUs alike
        texts[0] = stat((b0 + busy, i0 + 200 - busy), (b0 + busy, i0 + 200 - busy))
        clock[0] += 2.0
        own[0] += 2.0 * our_cores
        adapt.on_batch_end(0, {})
    adapt.on_epoch_begin(1, {})
    window(2.0, 1.3)   # someone else keeps about 0.7 of a core busy: give one up
    window(2.0, 1.0)   # they still have a whole core
    window(1.0, 1.0)   # they are gone: both threads again
    window(0.3, 0.0)   # a partial window counts as no change
    assert set_to == [1, 2] and adapt.used == [2, 1, 2]
    window(2.0, 1.0)
    adapt.on_train_end({})  # a notebook gets its count back after training
    assert set_to == [1, 2, 1, 2]


def test_busy_note_says_what_tenfold_does_about_it():
    assert cpu.busy_note(2, 0.2, 2, True) is None
    assert "about 1.0 of the 2 cores" in cpu.busy_note(1, 1.0, 2, True)
    assert "starts on 1 thread and takes more" in cpu.busy_note(1, 1.0, 2, True)
    assert "--threads" in cpu.busy_note(2, 1.0, 2, False)


def test_threads_flag_sets_and_records_the_thread_count(tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", "--data", make_tree(tmp_path / "data", n=8), "--epochs", "1", "--threads", "1",
                     "--out", run)
    assert result.returncode == 0, result.stderr
    assert "on CPU, 1 thread," in result.stderr
    assert load_checkpoint(run)["environment"]["cpu_threads"] == 1
    bad = run_cli("train", "--data", tmp_path / "data", "--threads", "0", "--out", tmp_path / "bad")
    assert bad.returncode == 1 and bad.stderr.strip() == "error: --threads must be at least 1, got 0"
