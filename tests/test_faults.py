"""Fault runs of `python -m plainrl train` (issue 14), the cheap deterministic ones:
kill -9 between checkpoints, right after one and in the middle of writing one, and
SIGINT / SIGTERM, each followed by --resume, which must end with exactly the metrics
of an uninterrupted run; and two ranks (gloo) of which one is killed, stopped or
started with other settings: each rank still running exits 6 with a one-line message.
The long random loop, the full disk, the read-only run directory and the same faults
under torchrun are in tools/fault_runs.py."""

import csv
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from plainrl.checkpoint import load_checkpoint
from plainrl.cli import main

UPDATES = 8
ARGS = [
    "train", "--task", "cartpole", "--device", "cpu", "--num-envs", "8",
    "--hidden", "8", "--seed", "3", "--no-progress", "--no-stop-when-solved",
    "--checkpoint-every", "2", "--max-updates", str(UPDATES),
]  # fmt: skip

# The CLI in a subprocess, with a fault injected at a known moment: after update
# AT (the hooks run after the checkpoint hook), or in the FSYNC-th fsync of a
# checkpoint write (inside atomic_write, before the rename).
WRAPPER = textwrap.dedent(
    """
    import os, signal, sys
    import plainrl.checkpoint as checkpoint
    import plainrl.cli as cli

    kind, argv = sys.argv[1], sys.argv[4:]
    at, fsync = int(sys.argv[2]), int(sys.argv[3])
    signum = getattr(signal, kind)

    class Fault:
        def after_update(self, trainer, row):
            if trainer.state.update == at:
                os.kill(os.getpid(), signum)

    hooks_for = cli.hooks_for

    def with_fault(cfg, args):
        hooks, checkpoints = hooks_for(cfg, args)
        return [*hooks, Fault()], checkpoints

    cli.hooks_for = with_fault
    calls = [0]
    real_fsync = checkpoint.os.fsync

    def fsync_then_die(fd):
        real_fsync(fd)
        calls[0] += 1
        if calls[0] == fsync:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.os.fsync = fsync_then_die
    sys.exit(cli.main(argv))
    """
)


def faulty_run(run_dir, kind, at=0, fsync=0):
    "The CLI in a subprocess with one fault; returns the CompletedProcess."
    argv = [*ARGS, "--run-dir", str(run_dir)]
    command = [sys.executable, "-c", WRAPPER, kind, str(at), str(fsync), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def metrics(run_dir):
    "metrics.csv without the wall-clock column."
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def resume(run_dir):
    return main([*ARGS, "--run-dir", str(run_dir), "--resume"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "The metrics of the uninterrupted run, in this process."
    run_dir = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    try:
        assert main([*ARGS, "--run-dir", str(run_dir)]) == 1  # the budget ran out
    finally:
        torch.set_num_threads(threads)
    rows = metrics(run_dir)
    assert len(rows) == UPDATES
    return rows


def resumed_metrics(run_dir):
    threads = torch.get_num_threads()
    try:
        assert resume(run_dir) == 1
    finally:
        torch.set_num_threads(threads)
    return metrics(run_dir)


@pytest.mark.parametrize("at, saved", [(3, 2), (4, 4)])
def test_kill_9_between_or_right_after_checkpoints_then_resume_is_exact(
    at, saved, reference, tmp_path
):
    done = faulty_run(tmp_path, "SIGKILL", at=at)
    assert done.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "checkpoint.pt")["state"]["update"] == saved
    assert resumed_metrics(tmp_path) == reference


def test_kill_9_while_writing_a_checkpoint_leaves_the_old_one(reference, tmp_path):
    # the fsyncs: the run directory's write probe, then at each save checkpoint.pt and
    # metrics.csv: the 4th is update 4's checkpoint
    done = faulty_run(tmp_path, "SIGKILL", fsync=4)
    assert done.returncode == -signal.SIGKILL
    stale = list(tmp_path.glob(".checkpoint.pt.*.tmp"))
    assert len(stale) == 1  # the half-done write, never renamed
    assert load_checkpoint(tmp_path / "checkpoint.pt")["state"]["update"] == 2
    assert resumed_metrics(tmp_path) == reference
    assert not list(tmp_path.glob(".*.tmp"))  # removed on start


@pytest.mark.parametrize("name, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_saves_says_one_line_and_resumes_exactly(
    name, status, reference, tmp_path
):
    # sent after update 2 (after its checkpoint): noticed at the end of update 3,
    # which is not a checkpoint update: the signal's own checkpoint
    done = faulty_run(tmp_path, name, at=2)
    assert done.returncode == status
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"plainrl: {name}: stopped after update 3; saved ")
    assert load_checkpoint(tmp_path / "checkpoint.pt")["state"]["update"] == 3
    assert resumed_metrics(tmp_path) == reference


# Two ranks by hand (RANK, WORLD_SIZE, ... set, as torchrun sets them), gloo on the
# CPU, every wait for a peer bounded by 5 s instead of the command line's 120 s; rank
# 1 may send itself a signal after an update.
RANKS = textwrap.dedent(
    """
    import functools, os, signal, sys
    import plainrl.cli as cli

    kind, at, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    cli.Distributed = functools.partial(cli.Distributed, timeout_s=5)

    class Fault:
        def after_update(self, trainer, row):
            if kind != "none" and trainer.rank == 1 and trainer.state.update == at:
                os.kill(os.getpid(), getattr(signal, kind))

    hooks_for = cli.hooks_for

    def with_fault(cfg, args):
        hooks, checkpoints = hooks_for(cfg, args)
        return [*hooks, Fault()], checkpoints

    cli.hooks_for = with_fault
    sys.exit(cli.main(argv))
    """
)


def start_ranks(run_dir, rank_1=(), kind="none", at=0):
    "Ranks 0 and 1 of the CLI (rank 1 with more arguments `rank_1`), as Popens."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank, extra in ((0, ()), (1, rank_1)):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank),
               "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
        argv = [*ARGS, "--run-dir", str(run_dir), *extra]
        command = [sys.executable, "-c", RANKS, kind, str(at), *argv]
        procs.append(
            subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        )
    return procs


def said(proc, timeout=90):
    "The exit status and the lines `proc` wrote to stderr."
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.strip().splitlines()


def test_ranks_with_other_settings_each_say_so_and_exit_6(tmp_path):
    # the checkpoint frequency too: rank 0 would wait at update 2 for rank 1, in vain
    # (tools/fault_runs.py tries --seed, --max-updates and --variant as well)
    procs = start_ranks(tmp_path, rank_1=("--checkpoint-every", "3"))
    for rank, proc in enumerate(procs):
        status, lines = said(proc)
        assert status == 6 and len(lines) == 1, lines
        assert lines[0].startswith(f"plainrl: rank {rank}: rank(s) 1 were started ")


@pytest.mark.parametrize("kind", ["SIGKILL", "SIGSTOP"])
def test_a_killed_or_stopped_rank_stops_the_other_with_status_6(kind, tmp_path):
    procs = start_ranks(tmp_path, kind=kind, at=3)
    try:
        status, lines = said(procs[0])  # SIGSTOP: after the 5 s timeout
    finally:
        procs[1].kill()
        procs[1].communicate()
    assert status == 6 and len(lines) == 1, lines
    assert lines[0].startswith("plainrl: rank 0: lost contact with another process")
    assert lines[0].endswith(f"the last checkpoint, of update 2, is {tmp_path}/"
                             "checkpoint.pt")  # fmt: skip
    assert load_checkpoint(tmp_path / "checkpoint.pt")["state"]["update"] == 2


def test_a_run_directory_refused_by_rank_0_stops_every_rank_at_once(tmp_path):
    (tmp_path / "metrics.csv").write_text("update\n1\n")  # it holds a run
    procs = start_ranks(tmp_path)
    (status_0, lines_0), (status_1, lines_1) = (said(p) for p in procs)
    assert status_0 == status_1 == 5, (lines_0, lines_1)  # not 6, "lost contact"
    assert len(lines_0) == 1 and "already holds a run" in lines_0[0]
    assert lines_1 == []  # rank 0 speaks for the run
