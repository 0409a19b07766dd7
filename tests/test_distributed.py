"""Chapter 9: runs over two processes with torchrun (gloo, CPU): each rank samples its
own trajectories, the parameters stay identical (also when the ranks skip other numbers
of rows of weight 0), resume is exact on every rank (each rank's baseline and
generators are saved), mismatched settings fail every rank."""

import subprocess
import sys

import torch

from plainrl.distributed import DistributedError, lost_peer

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
TORCHRUN += ["--nproc_per_node=2"]

WORKER = """
import os, sys, torch
from plainrl.cli import config
from plainrl.engine import Budget, Trainer
from plainrl.runs import Checkpoints, Distributed
from plainrl.trajectory import rollout

torch.set_num_threads(1)
out, updates, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume"
seed = int(sys.argv[4]) if len(sys.argv) > 4 and os.environ["RANK"] == "1" else 0
first = []
def recording(env, policy):  # keep this rank's first batch of actions
    traj = rollout(env, policy)
    if not first:
        first.append(traj.actions.clone())
    return traj
cfg = config("cartpole", num_envs=8, device="cpu")
budget = Budget(max_updates=updates, stop_when_solved=False)
hooks = [Distributed(timeout_s=60), Checkpoints(out + "/run", every=2, resume=resume)]
run = Trainer(cfg.task, None, cfg.algo, budget, seed=seed, device="cpu",
              sample=recording, weigh=cfg.weights, hooks=hooks).fit()
rank = os.environ["RANK"]
torch.save({"params": [p.detach() for p in run.policy.parameters()],
            "first": first[0], "rows": run.state.rows,
            "baseline": run.weigh.state_dict()["value"]}, f"{out}/{updates}-{rank}.pt")
"""


def launch(tmp_path, *args):
    (tmp_path / "worker.py").write_text(WORKER)
    command = [*TORCHRUN, str(tmp_path / "worker.py"), str(tmp_path), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def strip(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_two_ranks_stay_in_sync_and_resume_exactly(tmp_path):
    whole = tmp_path / "whole"
    whole.mkdir()
    result = launch(whole, "6", "new")
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = (torch.load(whole / f"6-{r}.pt") for r in (0, 1))
    assert not torch.equal(r0["first"], r1["first"])  # each rank samples its own
    assert all(torch.equal(a, b) for a, b in zip(r0["params"], r1["params"]))
    assert strip(r0["rows"]) == strip(r1["rows"])  # the same gathered metrics
    assert not torch.equal(r0["baseline"], r1["baseline"])  # each rank its own b
    ckpt = torch.load(whole / "run" / "checkpoint.pt", weights_only=True)
    assert len(ckpt["weigh"]) == len(ckpt["rng"]) == 2

    halves = tmp_path / "halves"
    halves.mkdir()
    for updates, mode in (("3", "new"), ("6", "resume")):
        result = launch(halves, updates, mode)
        assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        a, b = torch.load(whole / f"6-{rank}.pt"), torch.load(halves / f"6-{rank}.pt")
        assert all(torch.equal(p, q) for p, q in zip(a["params"], b["params"]))
        assert torch.equal(a["baseline"], b["baseline"])  # rank 1's own, restored
        assert strip(a["rows"]) == strip(b["rows"])


SKIPPING = """
import os, sys, torch
from plainrl.cli import config
from plainrl.engine import Budget, Trainer
from plainrl.runs import Distributed

torch.set_num_threads(1)
skip = sys.argv[2] == "skip"
cfg = config("tabular", num_envs=4, device="cpu", returns="return", baseline="none",
             skip_zero_weights=skip)


class Rows:
    "A hook: the rows that each forward pass of the update reads on this rank."

    def __init__(self):
        self.rows = []

    def ready(self, trainer):  # after Distributed's: trainer.model is DDP's
        record = lambda module, inputs: self.rows.append(inputs[0].shape[0])
        trainer.model.register_forward_pre_hook(record)


rows = Rows()
budget = Budget(max_updates=20, stop_when_solved=False)
run = Trainer(cfg.task, None, cfg.algo, budget, seed=0, device="cpu",
              weigh=cfg.weights, hooks=[Distributed(timeout_s=60), rows])
run.fit()
params = [p.detach() for p in run.policy.parameters()]
torch.save({"params": params, "rows": rows.rows},
           f"{sys.argv[1]}/{sys.argv[2]}-{os.environ['RANK']}.pt")
"""


def test_ranks_that_skip_different_rows_stay_in_sync(tmp_path):
    (tmp_path / "skipping.py").write_text(SKIPPING)
    for mode in ("skip", "every"):
        command = [*TORCHRUN, str(tmp_path / "skipping.py"), str(tmp_path), mode]
        done = subprocess.run(command, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
    skip = [torch.load(tmp_path / f"skip-{r}.pt") for r in (0, 1)]
    every = [torch.load(tmp_path / f"every-{r}.pt") for r in (0, 1)]
    assert skip[0]["rows"] != skip[1]["rows"]  # the ranks read other numbers of rows
    assert min(skip[0]["rows"] + skip[1]["rows"]) < 4 == max(every[0]["rows"])
    for a, b, c in zip(skip[0]["params"], skip[1]["params"], every[0]["params"]):
        assert torch.equal(a, b)  # DDP kept the ranks equal
        assert torch.allclose(a, c, atol=1e-5)  # and skipping took the same steps


def test_ranks_with_other_settings_fail_with_a_message(tmp_path):
    result = launch(tmp_path, "2", "new", "5")  # rank 1 with seed 5
    assert result.returncode != 0
    assert "were started with other settings than rank 0" in result.stderr


def test_torchrun_command_line(tmp_path):
    run_dir = tmp_path / "run"
    args = ["-m", "plainrl", "train", "--task", "tabular", "--device", "cpu"]
    args += ["--num-envs", "32", "--run-dir", str(run_dir), "--no-progress"]
    result = subprocess.run(
        [*TORCHRUN, *args], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("solved at update") == 1  # rank 0 alone prints
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    state = ckpt["state"]
    assert ckpt["settings"]["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert state["env_steps"] == state["update"] * 2 * 32 * 4


def test_a_failed_collective_is_told_in_one_line():
    gloo = "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
    error = RuntimeError(gloo + "[127.0.0.1]:41383: Connection reset by peer. This is")
    lost = lost_peer(error)
    assert isinstance(lost, DistributedError)
    assert str(lost) == (
        "lost contact with another process (it died, stopped or timed out): Read "
        "error [127.0.0.1]:41383: Connection reset by peer"
    )
    assert lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
