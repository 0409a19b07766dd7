"""The fault runs of issue 14 against the command line, `python -m plainrl train`:
kill -9 at random moments then --resume (the final metrics must equal an
uninterrupted run's), N + N == 2N, SIGINT / SIGTERM (and a second SIGINT), a
read-only run directory, a full disk (a small tmpfs, or `ulimit -f` where mounting is
not allowed), and 2-process gloo runs: under torchrun a rank stopped (SIGSTOP) or
killed, and by hand (RANK, WORLD_SIZE, ... set) ranks with other settings or a peer
that never starts: every rank must fail with a message, within the timeout.

    .venv/bin/python tools/fault_runs.py [--kills 12] [--seed 0] [--log /tmp/...]
                                         [--skip-torchrun] [--only NAME ...]

Each run's outcome (exit status, last message line, seconds, verdict) is appended to
the log (default /tmp/fault_runs.log); the exit status is the number of failed
verdicts. Linux only (signals, /proc, mount); mount needs root."""

import argparse
import csv
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
TORCHRUN = str(ROOT / ".venv" / "bin" / "torchrun")
BASE = [
    "train", "--task", "cartpole", "--device", "cpu", "--num-envs", "16",
    "--hidden", "8", "--seed", "0", "--no-progress", "--no-stop-when-solved",
    "--checkpoint-every", "2",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(name, None)
EXIT = {0: "solved", 1: "unsolved", 2: "usage", 3: "diverged", 4: "checkpoint",
        5: "run_dir", 6: "distributed", 70: "internal", 130: "SIGINT",
        143: "SIGTERM"}  # fmt: skip


class Log:
    "One line per run in the log file (and on stdout); counts the failed verdicts."

    def __init__(self, path):
        self.path, self.failed, self.runs = Path(path), 0, 0
        with open(self.path, "a") as f:
            f.write(f"# fault runs {time.strftime('%Y-%m-%d %H:%M:%S')}\n")

    def __call__(self, name, status, seconds, message, ok, note=""):
        self.runs += 1
        self.failed += not ok
        what = EXIT.get(status, f"signal {-status}" if status and status < 0 else "")
        line = (
            f"{'OK  ' if ok else 'FAIL'} {name:<28} exit={status} ({what}) "
            f"t={seconds:.1f}s msg={message!r}{' | ' + note if note else ''}"
        )
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def last_line(text):
    lines = [x for x in (text or "").strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else ""


def start(run_dir, *extra, cmd=None, env=None):
    "The CLI in its own session (so that its whole group can be killed)."
    argv = cmd or [PYTHON, "-m", "plainrl", *BASE, "--run-dir", str(run_dir), *extra]
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env or ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc, timeout=600):
    "Wait for `proc`; on a timeout kill its group. Returns (status, out, err)."
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        return None, out, err + "\n[killed by fault_runs.py: timeout]"
    return proc.returncode, out, err


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run(run_dir, *extra, timeout=600):
    t0 = time.monotonic()
    status, out, err = finish(start(run_dir, *extra), timeout)
    return status, out, err, time.monotonic() - t0


def metrics(run_dir):
    "metrics.csv without the wall-clock column ([] if there is none)."
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [
            {k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(f)
        ]


def checkpoint_update(run_dir):
    "The update of run_dir/checkpoint.pt, or None (read by a separate interpreter)."
    code = (
        "import sys; from plainrl.checkpoint import load_checkpoint as l; "
        "print(l(sys.argv[1])['state']['update'])"
    )
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        return None
    done = subprocess.run(
        [PYTHON, "-c", code, str(path)], capture_output=True, text=True, env=ENV
    )
    return int(done.stdout) if done.returncode == 0 else f"unreadable: {done.stderr}"


def wait_for(path, proc, timeout=120):
    "Wait until `path` exists (True) or `proc` has ended / the time is up (False)."
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if Path(path).exists():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def resume_to_end(run_dir, updates, log_note):
    "Resume (or start again, without a checkpoint) until the budget is spent."
    has = (Path(run_dir) / "checkpoint.pt").exists()
    extra = ["--max-updates", str(updates)] + (["--resume"] if has else ["--overwrite"])
    status, out, err, seconds = run(run_dir, *extra)
    log_note.append("resumed" if has else "no checkpoint yet: started again")
    return status, out + err, seconds


# ------------------------------------------------------------------ the runs
DONE = {"status": None}  # the exit status of the uninterrupted run: 0 or 1


def reference(work, updates):
    d = work / "reference"
    status, out, err, seconds = run(d, "--max-updates", str(updates))
    rows = metrics(d)
    DONE["status"] = status
    ok = status in (0, 1) and len(rows) == updates
    return rows, (status, seconds, last_line(out + err), ok)


def n_plus_n(work, log, updates, ref):
    d = work / "n_plus_n"
    half = updates // 2
    s1, _, _, t1 = run(d, "--max-updates", str(half))
    s2, out, err, t2 = run(d, "--max-updates", str(updates), "--resume")
    ok = s1 in (0, 1) and s2 == DONE["status"] and metrics(d) == ref
    note = f"{half}+{half} vs {updates}"
    log("N+N == 2N", s2, t1 + t2, last_line(out + err), ok, note)


def kill_9_loop(work, log, updates, ref, kills, rng, span):
    """kill -9 at random moments: any time in the `span` seconds an uninterrupted run
    takes (start-up included), or while training, after the first checkpoint. The
    exit status logged is the killed run's; the message, the resumed run's."""
    for i in range(kills):
        d = work / f"kill9_{i}"
        proc = start(d, "--max-updates", str(updates))
        t0 = time.monotonic()
        if i % 2 == 0:  # any moment, start-up included
            delay = rng.uniform(0.3, span)
            when = f"at {delay:.2f}s after start"
            time.sleep(delay)
        else:  # while training: after the first checkpoint, then a random wait
            wait_for(d / "checkpoint.pt", proc)
            delay = rng.uniform(0.0, span / 2)
            time.sleep(delay)
            when = f"{delay:.2f}s after the first checkpoint"
        alive = proc.poll() is None
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it had finished: the resume has nothing to do
            pass
        status, _, _ = finish(proc)
        killed_at = checkpoint_update(d)
        stale = len(list(d.glob(".*.tmp")))
        notes = [
            when,
            f"alive={alive}",
            f"checkpoint={killed_at}",
            f"stale tmp={stale}",
        ]
        s2, err, t2 = resume_to_end(d, updates, notes)
        left = len(list(d.glob(".*.tmp")))
        notes.append(f"tmp after resume={left}")
        same = metrics(d) == ref
        notes.append("metrics == uninterrupted" if same else "METRICS DIFFER")
        ok = same and s2 == DONE["status"] and left == 0
        ok = ok and not isinstance(killed_at, str)
        seconds = time.monotonic() - t0
        log(f"kill -9 #{i + 1}", status, seconds, last_line(err), ok, ", ".join(notes))


def signals(work, log, updates, ref):
    for name, want in (("SIGINT", 130), ("SIGTERM", 143)):
        d = work / name.lower()
        proc = start(d, "--max-updates", str(updates))
        t0 = time.monotonic()
        wait_for(d / "checkpoint.pt", proc)
        time.sleep(0.3)
        os.kill(proc.pid, getattr(signal, name))
        status, _, err = finish(proc, 120)
        seconds = time.monotonic() - t0
        lines = [x for x in err.strip().splitlines() if x.strip()]
        at = checkpoint_update(d)
        s2, err2, _ = resume_to_end(d, updates, [])
        same = metrics(d) == ref
        ok = status == want and len(lines) == 1 and "saved" in err and same
        note = (
            f"stderr lines={len(lines)}, checkpoint at update {at}, resume exit={s2}, "
            f"{'metrics == uninterrupted' if same else 'METRICS DIFFER'}"
        )
        log(name, status, seconds, last_line(err), ok, note)
    # a second SIGINT while the first is handled: stop at once, still one line
    d = work / "sigint_twice"
    proc = start(d, "--max-updates", str(updates))
    t0 = time.monotonic()
    wait_for(d / "checkpoint.pt", proc)
    os.kill(proc.pid, signal.SIGINT)
    os.kill(proc.pid, signal.SIGINT)
    status, _, err = finish(proc, 120)
    lines = [x for x in err.strip().splitlines() if x.strip()]
    at = checkpoint_update(d)
    ok = status == 130 and len(lines) == 1 and not isinstance(at, str)
    note = f"stderr lines={len(lines)}, checkpoint at update {at} (readable)"
    log("SIGINT twice", status, time.monotonic() - t0, last_line(err), ok, note)


def mount_tmpfs(path, options):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    return done.returncode == 0, done.stderr.strip()


def umount(path):
    subprocess.run(["umount", str(path)], capture_output=True)


def read_only(work, log, updates):
    mnt = Path("/tmp/fault_ro")
    mounted, why = mount_tmpfs(mnt, "ro,size=100k")
    if mounted:
        try:
            status, out, err, seconds = run(mnt / "run", "--max-updates", str(updates))
            ok = status == 5 and "cannot write" in err and "update" not in out
            log("read-only (ro tmpfs)", status, seconds, last_line(err), ok,
                "refused before training" if ok else "")  # fmt: skip
            status, out, err, seconds = run(mnt, "--max-updates", str(updates))
            ok = status == 5 and "cannot write" in err
            log("read-only run dir itself", status, seconds, last_line(err), ok)
        finally:
            umount(mnt)
    else:
        log("read-only (ro tmpfs)", None, 0, why, False, "mount refused")
    # not root: a directory without write permission, as the user nobody
    d = work / "ro_dir"
    d.mkdir()
    os.chmod(d, 0o555)
    cmd = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        PYTHON,
        "-m",
        "plainrl",
        *BASE,
        "--run-dir",
        str(d),
        "--max-updates",
        str(updates),
    ]
    os.chmod(work, 0o755)
    t0 = time.monotonic()
    status, out, err = finish(start(d, cmd=cmd), 120)
    ok = status == 5 and "cannot write" in err
    log("read-only dir (nobody)", status, time.monotonic() - t0, last_line(err), ok)


def full_disk(work, log, updates, ref, size):
    "`size`: the bytes of the uninterrupted run's last checkpoint."
    mnt = Path("/tmp/fullfs")
    mounted, why = mount_tmpfs(mnt, "size=200k")
    if mounted:
        try:
            # leave room for the start and a first checkpoint, not for the rest
            filler = mnt / "filler"
            room = int(1.5 * size)  # not enough for the new and the old checkpoint
            filler.write_bytes(b"\0" * (200 * 1024 - 8192 - room))
            d = mnt / "run"
            status, out, err, seconds = run(d, "--max-updates", str(updates))
            at = checkpoint_update(d)
            stale = len(list(d.glob(".*.tmp")))
            ok = status == 5 and "No space left" in err and not isinstance(at, str)
            note = f"last checkpoint at update {at} (readable), stale tmp={stale}"
            log("full disk (200k tmpfs)", status, seconds, last_line(err), ok, note)
            filler.unlink()  # room again: the run resumes exactly
            notes = []
            s2, err2, t2 = resume_to_end(d, updates, notes)
            same = metrics(d) == ref
            note = f"{notes[0]}; {'metrics == uninterrupted' if same else 'DIFFER'}"
            log(
                "full disk, then resume",
                s2,
                t2,
                last_line(err2),
                same and s2 == DONE["status"],
                note,
            )
        finally:
            umount(mnt)
    else:
        log("full disk (tmpfs)", None, 0, why, True, "mount refused; ulimit -f next")
    # a file-size limit, where mounting is not allowed (and as a second check)
    d = work / "ulimit"
    limit = max(1, size // 2048)  # KiB: half the last checkpoint
    shell = f'ulimit -f {limit} && exec "$@"'
    cmd = ["bash", "-c", shell, "bash", PYTHON, "-m", "plainrl",
           *BASE, "--run-dir", str(d), "--max-updates", str(updates)]  # fmt: skip
    t0 = time.monotonic()
    status, out, err = finish(start(d, cmd=cmd), 300)
    at = checkpoint_update(d)
    ok = status == 5 and "too large" in err.lower() and not isinstance(at, str)
    note = f"ulimit -f {limit} ({limit} KiB); last checkpoint at update {at}"
    log("file-size limit", status, time.monotonic() - t0, last_line(err), ok, note)


# ------------------------------------------------------------------ 2 processes
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(run_dir, *extra):
    cmd = [
        TORCHRUN,
        "--standalone",
        "--nproc_per_node=2",
        "--tee",
        "3",
        "-m",
        "plainrl",
        *BASE,
        "--num-envs",
        "8",
        "--run-dir",
        str(run_dir),
        *extra,
    ]
    return start(run_dir, cmd=cmd)  # fmt: skip


def workers(parent_pid):
    "{rank: pid} of the processes that torchrun started."
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            ppid = int(status.split("PPid:")[1].split()[0])
            if ppid != parent_pid:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for item in env:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(entry.name)
    return found


def rank_lines(out):
    "The last line each rank wrote (torchrun --tee prefixes them with [defaultN]:)."
    last = {}
    for line in out.splitlines():
        for r in (0, 1):
            tag = f"[default{r}]:"
            if line.startswith(tag) and line[len(tag) :].strip():
                last[r] = line[len(tag) :].strip()[:200]
    return last


def torchrun_runs(work, log, updates):
    # exact resume under torchrun: N + N == 2N (issue 14 item 1)
    full, half = work / "tr_full", work / "tr_half"
    t0 = time.monotonic()
    s1, out1, err1 = finish(torchrun(full, "--max-updates", str(updates)), 400)
    t1 = time.monotonic() - t0
    log("torchrun 2 ranks", s1, t1, last_line(out1 + err1), s1 in (0, 1), "plain")
    finish(torchrun(half, "--max-updates", str(updates // 2)), 400)
    s2, out2, err2 = finish(torchrun(half, "--max-updates", str(updates), "--resume"))
    same = metrics(full) == metrics(half) != []
    log("torchrun N+N == 2N", s2, time.monotonic() - t0 - t1, last_line(out2 + err2),
        same and s2 == s1, "metrics equal" if same else "METRICS DIFFER")  # fmt: skip
    for name, signum in (("SIGSTOP", signal.SIGSTOP), ("SIGKILL", signal.SIGKILL)):
        d = work / f"tr_{name.lower()}"
        proc = torchrun(d, "--max-updates", str(4 * updates))
        t0 = time.monotonic()
        wait_for(d / "checkpoint.pt", proc, 300)
        ranks = workers(proc.pid)
        if 1 in ranks:
            os.kill(ranks[1], signum)
        t_fault = time.monotonic()
        status, out, err = finish(proc, 420)
        seconds = time.monotonic() - t_fault
        for pid in ranks.values():  # a stopped rank left behind: end it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        lines = rank_lines(out + err)
        said = lines.get(0, "")
        ok = status not in (None, 0) and seconds < 300
        ok = ok and said.startswith("plainrl:") and "internal error" not in said
        note = f"ranks={ranks}; rank 0 said {lines.get(0)!r}; rank 1 {lines.get(1)!r}"
        log(f"torchrun rank 1 {name}", status, seconds, last_line(err), ok, note)
    # by hand: settings that differ between the ranks, and a peer that never starts
    for name, rank1 in (
        ("ranks: other --seed", ["--seed", "1"]),
        ("ranks: other --max-updates", ["--max-updates", str(updates + 1)]),
        ("ranks: other --checkpoint-every", ["--checkpoint-every", "3"]),
        ("ranks: other --variant", ["--variant", "vanilla"]),
    ):
        port = free_port()
        d = work / f"hand_{len(list(work.glob('hand_*')))}"
        procs = []
        t0 = time.monotonic()
        for rank, extra in ((0, []), (1, rank1)):
            env = {**ENV, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
            argv = [PYTHON, "-m", "plainrl", *BASE, "--num-envs", "8", "--max-updates",
                    str(updates), "--run-dir", str(d), *extra]  # fmt: skip
            procs.append(start(d, cmd=argv, env=env))
        results = [finish(p, 400) for p in procs]
        seconds = time.monotonic() - t0
        statuses = [r[0] for r in results]
        said = [last_line(r[2]) for r in results]
        ok = all(s == 6 for s in statuses) and all(said)
        note = f"exits={statuses}; rank 1 said {said[1]!r}"
        log(name, statuses[0], seconds, said[0], ok, note)
    port = free_port()
    env = {**ENV, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
    argv = [PYTHON, "-m", "plainrl", *BASE, "--max-updates", str(updates),
            "--run-dir", str(work / "alone")]  # fmt: skip
    t0 = time.monotonic()
    status, out, err = finish(start(work, cmd=argv, env=env), 400)
    seconds = time.monotonic() - t0
    ok = status == 6 and bool(last_line(err)) and seconds < 300
    log("peer never starts", status, seconds, last_line(err), ok)
    # a stray RANK: refused, not a silent run that writes nothing
    env = {**ENV, "RANK": "1"}
    argv = [PYTHON, "-m", "plainrl", *BASE, "--max-updates", "2",
            "--run-dir", str(work / "stray")]  # fmt: skip
    t0 = time.monotonic()
    status, out, err = finish(start(work, cmd=argv, env=env), 120)
    log("stray RANK=1", status, time.monotonic() - t0, last_line(err),
        status == 6 and "incomplete" in err)  # fmt: skip


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=12, help="kill -9 runs (default 12)")
    p.add_argument("--updates", type=int, default=60, help="2N (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    p.add_argument("--log", default="/tmp/fault_runs.log")
    p.add_argument("--skip-torchrun", action="store_true")
    p.add_argument("--only", nargs="*", help="n_plus_n kill9 signals ro disk torchrun")
    args = p.parse_args()
    want = set(args.only or ["n_plus_n", "kill9", "signals", "ro", "disk", "torchrun"])
    if args.skip_torchrun:
        want.discard("torchrun")
    log = Log(args.log)
    work = Path(tempfile.mkdtemp(prefix="fault_runs_"))
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    try:
        ref, (status, seconds, message, ok) = reference(work, args.updates)
        log("uninterrupted reference", status, seconds, message, ok,
            f"{len(ref)} updates")  # fmt: skip
        if "n_plus_n" in want:
            n_plus_n(work, log, args.updates, ref)
        if "kill9" in want:
            kill_9_loop(work, log, args.updates, ref, args.kills, rng, seconds)
        if "signals" in want:
            signals(work, log, args.updates, ref)
        if "ro" in want:
            read_only(work, log, args.updates)
        if "disk" in want:
            size = (work / "reference" / "checkpoint.pt").stat().st_size
            full_disk(work, log, args.updates, ref, size)
        if "torchrun" in want:
            torchrun_runs(work, log, args.updates)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = (
        f"# {log.runs} runs, {log.failed} failed, {time.monotonic() - t0:.0f} s "
        f"(seed {args.seed})"
    )
    print(summary)
    with open(log.path, "a") as f:
        f.write(summary + "\n")
    return log.failed


if __name__ == "__main__":
    sys.exit(main())
