"""Many short 2-rank gloo runs (DDP or FSDP) that end exactly as the trainer does (`close_world`,
then `exit_now`), for test_teardown.py. Importing torch costs seconds, so this process imports once
and forks the two ranks of every run; each rank is then a full interpreter that trains, reduces
its loss like the trainer (the last collective holds a Python tensor) and tears down. With
TEARDOWN=interpreter a rank ends the way the hand-written baseline used to (destroy, then a normal
interpreter exit with finalization), to show the race. Prints one JSON line per rank exit."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch._dynamo  # lazily imported by FSDP: import once here (seconds), not in every forked rank
import torch.distributed as dist
import torch.distributed.fsdp  # likewise
from kubeforge_api.trainingjob import Strategy
from kubeforge_operator.ports import free_port
from kubeforge_trainer.train.common import init_world
from kubeforge_trainer.train.data_parallel import wrap_model
from kubeforge_trainer.train.teardown import close_world, exit_now

RUN_TIMEOUT_S = 60.0


def rank_main(strategy: Strategy) -> int:
    world = init_world("gloo")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layers = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    model = wrap_model(layers, strategy, world, 25, torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = torch.zeros(())
    for _ in range(3):
        x, y = torch.randn(16, 32), torch.randint(0, 10, (16,))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = loss.detach()
        dist.all_reduce(loss, op=dist.ReduceOp.AVG)
    print(json.dumps({"finished": True, "loss": float(loss)}), flush=True)
    if os.environ.get("TEARDOWN") == "interpreter":
        dist.destroy_process_group()
        return 0
    close_world(world)
    exit_now(0)


def fork_rank(rank: int, port: int, strategy: Strategy, log: Path) -> int:
    pid = os.fork()
    if pid:
        return pid
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"})
    sys.exit(rank_main(strategy))  # SystemExit unwinds to the top: a normal interpreter exit in the child


def wait(pid: int, deadline: float) -> int:
    """The child's exit status as the shell shows it: the code, or -signal (-9 if it hung)."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.01)


def main() -> None:
    strategy, runs = Strategy(sys.argv[1]), int(sys.argv[2])
    logs = Path(tempfile.mkdtemp(prefix="kf-teardown-"))
    for run in range(runs):
        port = free_port()
        paths = [logs / f"run{run}-rank{r}.log" for r in range(2)]
        pids = [fork_rank(r, port, strategy, paths[r]) for r in range(2)]
        deadline = time.monotonic() + RUN_TIMEOUT_S
        for rank, pid in enumerate(pids):
            code = wait(pid, deadline)
            print(json.dumps({"run": run, "rank": rank, "exit": code, "output": paths[rank].read_text()[-1500:]}),
                  flush=True)


if __name__ == "__main__":
    main()
