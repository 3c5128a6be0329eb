"""trainers.communication on 2 gloo ranks of this machine (torch.multiprocessing, no Ray): what each
communication technique sends, counted where the collectives are issued, and what it trains."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from trainers.communication import CommMeter, distribute
from trainers.techniques import techniques_from_choices

STEPS = 10
IN, OUT = 32, 24


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN, OUT), nn.ReLU(), nn.Linear(OUT, 2))


def _numel(model):
    return sum(p.numel() for p in model.parameters())


def _steps(ddp, model, optimizer, rank):
    generator = torch.Generator().manual_seed(rank)  # every rank its own batches
    grads = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        ddp(torch.randn(8, IN, generator=generator)).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
    return grads


def _train(choices, rank):
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    meter = CommMeter()
    grads = _steps(distribute(model, optimizer, techniques_from_choices(choices), torch.device("cpu"), meter), model, optimizer, rank)
    before_finish = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    figures = meter.finish()
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return {"figures": figures, "grads": grads, "before_finish": before_finish, "after": after, "numel": _numel(model)}


def _plain_ddp_grads(rank):
    model = _model()
    return _steps(nn.parallel.DistributedDataParallel(model), model, torch.optim.AdamW(model.parameters(), lr=1e-2), rank)


def _rank(rank, init_file, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        outcome = {name: _train(choices, rank) for name, choices in SCENARIOS.items()}
        outcome["plain_ddp_grads"] = _plain_ddp_grads(rank)
        outcome["all_reduce_restored"] = dist.all_reduce is dist.distributed_c10d.all_reduce
        results[rank] = outcome
    finally:
        dist.destroy_process_group()


SCENARIOS = {
    "none": {},
    "fp16": {"grad_compression": "fp16"},
    "powersgd": {"grad_compression": "powersgd", "powersgd_rank": 2},
    "sync4": {"sync_every": 4},
}


@pytest.mark.slow  # two spawned gloo ranks load torch and train four scenarios
def test_each_communication_technique_sends_what_it_promises(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    zero, one = results[0], results[1]
    numel = zero["none"]["numel"]
    none, fp16, powersgd, sync4 = (zero[name]["figures"] for name in ("none", "fp16", "powersgd", "sync4"))
    # off: PyTorch's allreduce_hook, counted: the same gradients as DDP's built-in all-reduce, bit for bit
    for counted, plain in zip(zero["none"]["grads"], zero["plain_ddp_grads"]):
        assert all(torch.equal(a, b) for a, b in zip(counted, plain))
    assert none == {"comm_bytes_per_step": 4.0 * numel, "comm_bytes": 4.0 * numel * STEPS, "sync_rounds": STEPS, "optimizer_steps": STEPS}
    assert fp16["comm_bytes_per_step"] == 2.0 * numel and fp16["sync_rounds"] == STEPS
    # PowerSGD: the first 2 steps uncompressed, then rank-2 factors of the 24x32 matrix (and the rest as it is)
    compressed = (IN + OUT) * 2 + OUT + 2 * OUT + 2  # P and Q of layer 0; its bias, layer 1 (too small to compress)
    assert powersgd["comm_bytes"] == 4 * (2 * numel + (STEPS - 2) * compressed)
    # local SGD: no gradient all-reduce; averages after steps 4 and 8, and the last one at the end (step 10)
    assert sync4["sync_rounds"] == 3 and sync4["optimizer_steps"] == STEPS
    assert sync4["comm_bytes"] == 3 * 4 * 3 * numel  # parameters and AdamW's two moments, 3 times
    for name in ("none", "fp16", "powersgd", "sync4"):
        assert torch.equal(zero[name]["after"], one[name]["after"]), name  # the replicas agree
    assert not torch.equal(zero["sync4"]["before_finish"], one["sync4"]["before_finish"])  # they drifted apart locally
    assert zero["all_reduce_restored"] and one["all_reduce_restored"]
