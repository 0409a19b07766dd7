"""The command line `python -m plainrl train ...`, run in process on the slippery chain (fast)."""
import csv
import subprocess
import sys

import pytest

from plainrl.train import main


def run_cli(tmp_path, *extra):
    return main(["train", "--env", "tabular", "--device", "cpu", "--seed", "0", "--run-dir", str(tmp_path),
                 "--no-progress", *extra])


def test_solved_run_writes_metrics_and_curve(tmp_path, capsys):
    assert run_cli(tmp_path) == 0
    assert "solved at update" in capsys.readouterr().out
    with open(tmp_path / "metrics.csv", newline="") as f: rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["update", "env_steps", "wall_s", "return", "loss", "objective"]
    assert [int(row["update"]) for row in rows] == list(range(1, len(rows) + 1))
    assert int(rows[-1]["env_steps"]) == len(rows) * 64 * 4  # 64 copies of a horizon-4 MDP per update
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_budget_ran_out(tmp_path, capsys):
    assert run_cli(tmp_path, "--max-updates", "2") == 1
    assert "not solved: the budget ran out after 2 updates" in capsys.readouterr().err
    with open(tmp_path / "metrics.csv") as f: assert len(f.read().splitlines()) == 1 + 2
    assert run_cli(tmp_path, "--max-env-steps", "300") == 1  # two updates of 256 steps reach 300
    assert "budget ran out after 2 updates, 512 env steps" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--env", "atari"], "argument --env: invalid choice: 'atari'"),
    (["--env", "tabular", "--variant", "ppo"], "argument --variant: invalid choice: 'ppo'"),
    (["--env", "tabular", "--device", "gpu0"], "argument --device: device='gpu0' is not a device"),
    (["--env", "tabular", "--lr", "-1"], "argument --lr: expected a positive float, got '-1'"),
    (["--env", "tabular", "--num-envs", "2.5"], "argument --num-envs: expected a positive int, got '2.5'"),
    (["--env", "tabular", "--seed", "-1"], "argument --seed: expected a non-negative int"),
    (["--env", "tokens", "--answer-len", "12"], "argument --answer-len: expected an int in [1, 8]"),
    (["--variant", "rtg"], "the following arguments are required: --env"),
])
def test_bad_arguments(args, message, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", *args])
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "plainrl", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--max-env-steps" in result.stdout
