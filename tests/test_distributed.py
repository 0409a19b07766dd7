"""Chapter 8: one run over two processes with torchrun (gloo, CPU): each rank samples its own trajectories, the
parameters stay identical on both ranks, training still reaches the target, and only rank 0 writes files."""
import csv
import subprocess
import sys
from pathlib import Path

import torch

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

WORKER = '''
import os, sys, torch
from dataclasses import replace
import plainrl.train
from plainrl.reinforce import CONFIGS

torch.set_num_threads(1)
out, first = sys.argv[1], []
original = plainrl.train.rollout
def recording(env, policy):  # keep this rank's first batch of actions
    traj = original(env, policy)
    if not first: first.append(traj.actions.clone())
    return traj
plainrl.train.rollout = recording
run = plainrl.train.fit(replace(CONFIGS["tabular"], device="cpu", num_envs=32), out + "/run", checkpoint_every=10)
torch.save({"params": [p.detach() for p in run.policy.parameters()], "first_actions": first[0],
            "solved_at": run.solved_at, "rows": run.rows}, f"{out}/rank{os.environ['RANK']}.pt")
'''


def test_two_processes_stay_in_sync_and_learn(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    result = subprocess.run([*TORCHRUN, str(tmp_path / "worker.py"), str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert not torch.equal(rank0["first_actions"], rank1["first_actions"])  # each rank samples its own
    assert all(torch.equal(a, b) for a, b in zip(rank0["params"], rank1["params"]))
    assert rank0["solved_at"] is not None and rank0["solved_at"] == rank1["solved_at"]
    rows, strip = rank0["rows"], lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]
    assert strip(rows) == strip(rank1["rows"])  # the same gathered metrics on both ranks (timings aside)
    assert rows[-1]["env_steps"] == len(rows) * 2 * 32 * 4  # both ranks' steps count
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["checkpoint.pt", "learning_curve.png", "metrics.csv"]


def test_torchrun_command_line(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run([*TORCHRUN, "-m", "plainrl", "train", "--env", "tabular", "--device", "cpu",
                             "--num-envs", "32", "--run-dir", str(run_dir), "--no-progress"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("solved at update") == 1  # rank 0 alone prints
    with open(run_dir / "metrics.csv", newline="") as f: rows = list(csv.DictReader(f))
    assert int(rows[-1]["env_steps"]) == len(rows) * 2 * 32 * 4
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
