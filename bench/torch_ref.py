#!/usr/bin/env python3
"""PyTorch reference of mtlrank's multi-task ranking models, for speed.

`make bench` (scripts/bench.sh) runs this script next to `mtlrank bench` on the
same machine and prints the ratio of their throughputs. Both sides train and
score the same models on the same data:

  * the built-in `tenrec` schema: categorical user_id (100001 rows), item_id
    (179281), video_category (6), gender (6), age (11); binary targets click,
    follow, like, share; regression target watching_times;
  * embedding dims ceil(2 * rows**0.25) rounded up to a multiple of 8, inputs
    concatenated in sorted feature-name order, U(-0.05, 0.05) tables;
  * DCN: full-rank cross layers x0 * (x W + b) + x on the concatenated
    inputs, then the MLP; DLRM (every table embeddings_dim wide, tenrec has
    no continuous feature, so no bottom MLP): the pairwise dot products of
    the feature embeddings (i < j) into the top MLP;
  * shared-bottom MLP, MMoE, CGC and PLE as in docs/ARCHITECTURE.md: a gate is
    Dense(gate_dim, relu) -> Dense(experts, no bias) -> softmax; PLE levels
    after the first read the previous level's task and shared outputs; each
    task has a tower and a one-unit head; BCE-with-logits for binary tasks,
    MSE for the regression task; Adam, lr 1e-3;
  * DeepFM and Wide&Deep as in docs/ARCHITECTURE.md: one summed logit that
    every task's tower reads; the wide part a dim-1 table per categorical
    feature but the user id, and for Wide&Deep one per pair of them, indexed
    by a hashed cross computed with the batch (outside the timing: mtlrank
    computes its crosses while feeding each batch, inside it; the hash here
    is a cheaper one with the same use);
  * eight in-memory batches with ids uniform over each table and random
    labels, so no file reading is timed (PyTorch's best case).

PyTorch gets two choices mtlrank does not have, and bench.sh keeps the better
result of each: --impl fused (the experts of a bank computed as one wide GEMM
and then batched GEMMs) or naive (a Python loop over expert modules, as most
public MTL code is written), and --sparse (sparse embedding gradients with
SparseAdam) or dense gradients with Adam over every table.

Output: one JSON object per line and mode, with the fields mtlrank bench
prints: model, impl, mode ("train" or "infer"), threads, batch, steps,
seconds, examples_per_s, device, table_rows, params (plus sparse and torch).

Needs Debian's python3-torch (`make bench` installs it).
"""
import argparse
import json
import math
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

BINARY_TARGETS = ("click", "follow", "like", "share")
REGRESSION_TARGETS = ("watching_times",)
BATCHES = 8  # distinct in-memory batches, cycled (as in mtlrank bench)


def tenrec_tables(table_rows):
    """Rows of each embedding table of the tenrec schema (int_domain.max + 1)."""
    users, items = (table_rows, table_rows) if table_rows else (100001, 179281)
    return {"user_id": users, "item_id": items, "video_category": 6, "gender": 6, "age": 11}


def embedding_dim(rows, multiplier):
    """Merlin's inferred embedding size: ceil(multiplier * rows^0.25), then
    rounded up to a multiple of 8."""
    d = math.ceil(multiplier * rows ** 0.25)
    return -(-d // 8) * 8


def int_list(text):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"want comma-separated integers, got {text!r}")


def cross_ids(a, b, bins):
    """A bucket per pair of ids (a multiplicative hash; mtlrank uses
    splitmix64, the cost of using the buckets is the same)."""
    return (a * 1000003 + b * 7919 + 12345) % bins


def dense_stack(width_in, widths):
    """Dense -> ReLU for each width; glorot-uniform kernels and zero biases."""
    mods = []
    for w in widths:
        lin = nn.Linear(width_in, w)
        nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(lin.bias)
        mods += [lin, nn.ReLU()]
        width_in = w
    return nn.Sequential(*mods)


class ExpertBank(nn.Module):
    """n expert MLPs reading one input [B, D]; returns [B, n, d].

    fused: the first layers of all experts are one [D, n*w] GEMM and every
    further layer is a batched GEMM over the experts. naive: a Python loop
    over n independent MLPs."""

    def __init__(self, width_in, widths, n, impl):
        super().__init__()
        self.n, self.impl, self.width_out = n, impl, widths[-1]
        if impl == "naive":
            self.mlps = nn.ModuleList(dense_stack(width_in, widths) for _ in range(n))
            return
        first = torch.empty(width_in, n * widths[0])
        for e in range(n):  # glorot per expert, as each expert is its own Dense
            nn.init.xavier_uniform_(first[:, e * widths[0]:(e + 1) * widths[0]])
        self.first_w = nn.Parameter(first)
        self.first_b = nn.Parameter(torch.zeros(n * widths[0]))
        self.rest_w, self.rest_b = nn.ParameterList(), nn.ParameterList()
        for a, b in zip(widths, widths[1:]):
            w = torch.empty(n, a, b)
            for e in range(n):
                nn.init.xavier_uniform_(w[e])
            self.rest_w.append(nn.Parameter(w))
            self.rest_b.append(nn.Parameter(torch.zeros(n, 1, b)))

    def forward(self, x):
        if self.impl == "naive":
            return torch.stack([m(x) for m in self.mlps], dim=1)
        h = torch.relu(torch.addmm(self.first_b, x, self.first_w))  # [B, n*w]
        h = h.view(x.shape[0], self.n, -1)
        if len(self.rest_w) == 0:
            return h
        h = h.transpose(0, 1)  # [n, B, w]: one GEMM per expert below
        for w, b in zip(self.rest_w, self.rest_b):
            h = torch.relu(torch.baddbmm(b, h, w))
        return h.transpose(0, 1)


class Gate(nn.Module):
    """Softmax weights over experts from the gate's input, and their mix."""

    def __init__(self, width_in, experts, gate_dim, temperature):
        super().__init__()
        self.hidden = dense_stack(width_in, [gate_dim]) if gate_dim > 0 else nn.Identity()
        self.logits = nn.Linear(gate_dim if gate_dim > 0 else width_in, experts, bias=False)
        nn.init.xavier_uniform_(self.logits.weight)
        self.temperature = temperature

    def forward(self, x, experts):  # experts: [B, E, d]
        w = torch.softmax(self.logits(self.hidden(x)) / self.temperature, dim=1)
        return torch.bmm(w.unsqueeze(1), experts).squeeze(1)


class CGCLevel(nn.Module):
    """One extraction level: per-task experts, shared experts, a gate per task
    over its own and the shared experts and, except on the last level of a
    PLE, a shared gate over every expert."""

    def __init__(self, width_in, args, tasks, shared_gate):
        super().__init__()
        nt, ns = args.cgc_num_task_experts, args.cgc_num_shared_experts
        self.task_banks = nn.ModuleList(
            ExpertBank(width_in, args.expert_mlp_layers, nt, args.impl) for _ in range(tasks))
        self.shared_bank = ExpertBank(width_in, args.expert_mlp_layers, ns, args.impl)
        self.task_gates = nn.ModuleList(
            Gate(width_in, nt + ns, args.gate_dim, args.temperature) for _ in range(tasks))
        self.shared_gate = (Gate(width_in, tasks * nt + ns, args.gate_dim, args.temperature)
                            if shared_gate else None)

    def forward(self, task_in, shared_in):
        shared = self.shared_bank(shared_in)
        own = [bank(x) for bank, x in zip(self.task_banks, task_in)]
        task_out = [gate(x, torch.cat([ex, shared], dim=1))
                    for gate, x, ex in zip(self.task_gates, task_in, own)]
        shared_out = None
        if self.shared_gate is not None:
            shared_out = self.shared_gate(shared_in, torch.cat(own + [shared], dim=1))
        return task_out, shared_out


class WideDeep(nn.Module):
    """The body of DeepFM and Wide&Deep: wide + (fm) + Dense_1(MLP(e))."""

    def __init__(self, args, tables, names, widths):
        super().__init__()
        self.fm = args.model == "deepfm"
        self.wide_cols = [i for i, n in enumerate(names) if n != "user_id"]
        self.pairs = []
        if not self.fm:
            self.pairs = [(i, j) for x, i in enumerate(self.wide_cols) for j in self.wide_cols[x + 1:]]
        rows = [tables[names[i]] for i in self.wide_cols] + [args.wnd_hashed_cross_num_bins] * len(self.pairs)
        self.wide = nn.ModuleList(nn.Embedding(r, 1, sparse=args.sparse) for r in rows)
        for w in self.wide:
            nn.init.zeros_(w.weight)
        self.wide_bias = nn.Parameter(torch.zeros(1))
        self.deep = dense_stack(sum(widths), args.mlp_layers)
        self.logit = nn.Linear(args.mlp_layers[-1], 1)
        self.bins = args.wnd_hashed_cross_num_bins

    def forward(self, ids, embs):
        z = self.logit(self.deep(torch.cat(embs, dim=1))) + self.wide_bias
        cols = [ids[:, i] for i in self.wide_cols]
        cols += [cross_ids(ids[:, i], ids[:, j], self.bins) for i, j in self.pairs]
        z = z + sum(w(c) for w, c in zip(self.wide, cols))
        if self.fm:
            e = torch.stack(embs, dim=1)  # [B, F, K]
            z = z + 0.5 * (e.sum(1).square() - e.square().sum(1)).sum(1, keepdim=True)
        return z


class Cross(nn.Module):
    """DCN-V2's cross network: depth layers x_{l+1} = x0 * (x_l W + b) + x_l
    with full-rank W, truncated-normal (std 0.05) kernels and zero biases."""

    def __init__(self, width, depth):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        for lin in self.layers:
            nn.init.trunc_normal_(lin.weight, std=0.05, a=-0.1, b=0.1)
            nn.init.zeros_(lin.bias)

    def forward(self, x0):
        x = x0
        for lin in self.layers:
            x = x0 * lin(x) + x
        return x


class DotInteraction(nn.Module):
    """DLRM's pairwise dot products <v_i, v_j>, i < j, of [B, F, E] vectors."""

    def __init__(self, features):
        super().__init__()
        i, j = torch.triu_indices(features, features, offset=1)
        self.register_buffer("i", i, persistent=False)
        self.register_buffer("j", j, persistent=False)

    def forward(self, v):
        return torch.bmm(v, v.transpose(1, 2))[:, self.i, self.j]


class MultiTaskModel(nn.Module):
    def __init__(self, args, tables):
        super().__init__()
        self.names = sorted(tables)
        self.tables = nn.ModuleList()
        width = 0
        widths = []
        for name in self.names:
            dim = embedding_dim(tables[name], args.embedding_sizes_multiplier)
            if args.model in ("dlrm", "deepfm"):
                dim = args.embeddings_dim
            emb = nn.Embedding(tables[name], dim, sparse=args.sparse)
            nn.init.uniform_(emb.weight, -0.05, 0.05)
            self.tables.append(emb)
            width += dim
            widths.append(dim)
        self.tasks = len(BINARY_TARGETS) + len(REGRESSION_TARGETS)
        self.model = args.model
        if args.model == "mlp":
            self.bottom = dense_stack(width, args.mlp_layers)
            rep = args.mlp_layers[-1]
        elif args.model in ("deepfm", "wide_n_deep"):
            self.body = WideDeep(args, tables, self.names, widths)
            rep = 1
        elif args.model == "dcn":
            self.bottom = nn.Sequential(Cross(width, args.dcn_interacted_layer_num),
                                        dense_stack(width, args.mlp_layers))
            rep = args.mlp_layers[-1]
        elif args.model == "dlrm":
            self.features = len(self.names)
            self.bottom = nn.Sequential(DotInteraction(self.features),
                                        dense_stack(self.features * (self.features - 1) // 2, args.mlp_layers))
            rep = args.mlp_layers[-1]
        elif args.model == "mmoe":
            n = args.mmoe_num_mlp_experts
            self.bank = ExpertBank(width, args.expert_mlp_layers, n, args.impl)
            self.gates = nn.ModuleList(
                Gate(width, n, args.gate_dim, args.temperature) for _ in range(self.tasks))
            rep = args.expert_mlp_layers[-1]
        else:
            levels = 1 if args.model == "cgc" else args.ple_num_layers
            self.levels = nn.ModuleList(
                CGCLevel(width if i == 0 else args.expert_mlp_layers[-1], args, self.tasks, i < levels - 1)
                for i in range(levels))
            rep = args.expert_mlp_layers[-1]
        towers = args.tower_layers if args.use_task_towers else []
        self.towers = nn.ModuleList(
            dense_stack(rep, towers) if towers else nn.Identity() for _ in range(self.tasks))
        self.heads = nn.ModuleList(nn.Linear(towers[-1] if towers else rep, 1) for _ in range(self.tasks))

    def representations(self, x):
        if self.model in ("mlp", "dcn"):
            return [self.bottom(x)] * self.tasks
        if self.model == "dlrm":  # the tables are equally wide: [B, F, E]
            return [self.bottom(x.view(x.shape[0], self.features, -1))] * self.tasks
        if self.model == "mmoe":
            experts = self.bank(x)
            return [gate(x, experts) for gate in self.gates]
        task_in, shared_in = [x] * self.tasks, x
        for level in self.levels:
            task_in, shared_in = level(task_in, shared_in)
        return task_in

    def forward(self, ids):
        embs = [emb(ids[:, i]) for i, emb in enumerate(self.tables)]
        if self.model in ("deepfm", "wide_n_deep"):
            reps = [self.body(ids, embs)] * self.tasks
        else:
            reps = self.representations(torch.cat(embs, dim=1))
        return [head(tower(r)).squeeze(1) for r, tower, head in zip(reps, self.towers, self.heads)]


def make_batches(tables, names, batch, device, gen):
    """BATCHES batches of ids (uniform over each table, [B, features]) and
    labels (0/1 for the binary targets, 0..5 for the regression target)."""
    out = []
    for _ in range(BATCHES):
        ids = torch.stack([torch.randint(0, tables[n], (batch,), generator=gen) for n in names], dim=1)
        labels = [torch.randint(0, 2, (batch,), generator=gen).float() for _ in BINARY_TARGETS]
        labels += [5 * torch.rand(batch, generator=gen) for _ in REGRESSION_TARGETS]
        out.append((ids.to(device), [y.to(device) for y in labels]))
    return out


def loss_of(outputs, labels):
    nb = len(BINARY_TARGETS)
    loss = sum(F.binary_cross_entropy_with_logits(o, y) for o, y in zip(outputs[:nb], labels[:nb]))
    return loss + sum(F.mse_loss(o, y) for o, y in zip(outputs[nb:], labels[nb:]))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mmoe",
                   choices=["mlp", "mmoe", "cgc", "ple", "dcn", "dlrm", "deepfm", "wide_n_deep"])
    p.add_argument("--mode", default="both", choices=["train", "infer", "both"])
    p.add_argument("--impl", default="fused", choices=["fused", "naive"],
                   help="experts as wide and batched GEMMs (fused) or a loop over modules (naive)")
    p.add_argument("--sparse", action="store_true", help="sparse embedding gradients and SparseAdam")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=50, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--table_rows", type=int, default=0,
                   help="user_id and item_id rows (0: 100001 and 179281)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (PyTorch >= 2)")
    p.add_argument("--mlp_layers", type=int_list, default=[128, 64, 32])
    p.add_argument("--expert_mlp_layers", type=int_list, default=[64])
    p.add_argument("--tower_layers", type=int_list, default=[64])
    p.add_argument("--use_task_towers", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    p.add_argument("--gate_dim", type=int, default=64)
    p.add_argument("--mtl_gates_softmax_temperature", dest="temperature", type=float, default=1.0)
    p.add_argument("--mmoe_num_mlp_experts", "--num_experts", type=int, default=4)
    p.add_argument("--cgc_num_task_experts", "--num_task_experts", type=int, default=1)
    p.add_argument("--cgc_num_shared_experts", "--num_shared_experts", type=int, default=2)
    p.add_argument("--ple_num_layers", type=int, default=2)
    p.add_argument("--embedding_sizes_multiplier", type=float, default=2.0)
    p.add_argument("--dcn_interacted_layer_num", type=int, default=1)
    p.add_argument("--embeddings_dim", type=int, default=128, help="every embedding's width (dlrm, deepfm)")
    p.add_argument("--wnd_hashed_cross_num_bins", type=int, default=10000, help="buckets of each cross (wide_n_deep)")
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args(argv)
    checks = [
        (args.threads >= 1, "--threads must be >= 1"),
        (args.batch >= 1, "--batch must be >= 1"),
        (args.steps >= 1, "--steps must be >= 1"),
        (args.warmup >= 0, "--warmup must be >= 0"),
        (args.table_rows == 0 or args.table_rows >= 2, "--table_rows must be 0 or >= 2"),
        (all(w > 0 for w in args.mlp_layers + args.expert_mlp_layers + args.tower_layers)
         and args.mlp_layers and args.expert_mlp_layers, "layer widths must be positive"),
        (min(args.mmoe_num_mlp_experts, args.cgc_num_task_experts, args.cgc_num_shared_experts,
             args.ple_num_layers) >= 1, "expert and level counts must be >= 1"),
        (args.gate_dim >= 0, "--gate_dim must be >= 0"),
        (args.dcn_interacted_layer_num >= 1, "--dcn_interacted_layer_num must be >= 1"),
        (args.embeddings_dim >= 1 and args.wnd_hashed_cross_num_bins >= 1,
         "--embeddings_dim and --wnd_hashed_cross_num_bins must be >= 1"),
    ]
    for ok, msg in checks:
        if not ok:
            p.error(msg)
    if args.compile and not hasattr(torch, "compile"):
        p.error(f"--compile needs PyTorch 2 or later; this is {torch.__version__}")
    return args


def main(argv):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tables = tenrec_tables(args.table_rows)
    torch.manual_seed(0)
    model = MultiTaskModel(args, tables).to(device)
    batches = make_batches(tables, model.names, args.batch, device, torch.Generator().manual_seed(1))
    run = torch.compile(model) if args.compile else model

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def report(mode, seconds):
        rec = {"model": args.model, "impl": args.impl, "sparse": args.sparse, "mode": mode,
               "threads": args.threads, "batch": args.batch, "steps": args.steps,
               "seconds": round(seconds, 6), "examples_per_s": round(args.steps * args.batch / seconds, 1),
               "device": args.device, "table_rows": tables["user_id"],
               "params": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}
        print(json.dumps(rec), flush=True)

    def timed(step):
        for i in range(args.warmup):
            step(batches[i % BATCHES])
        sync()
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(batches[i % BATCHES])
        sync()
        return time.perf_counter() - t0

    if args.mode in ("train", "both"):
        model.train()
        if args.sparse:
            emb = list(model.tables.parameters())
            if hasattr(model, "body"):
                emb += list(model.body.wide.parameters())
            emb_ids = {id(p) for p in emb}
            rest = [p for p in model.parameters() if id(p) not in emb_ids]
            opts = [torch.optim.SparseAdam(emb, lr=args.lr), torch.optim.Adam(rest, lr=args.lr)]
        else:
            opts = [torch.optim.Adam(model.parameters(), lr=args.lr)]

        def train_step(b):
            ids, labels = b
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss_of(run(ids), labels).backward()
            for o in opts:
                o.step()

        report("train", timed(train_step))
    if args.mode in ("infer", "both"):
        model.eval()
        nb = len(BINARY_TARGETS)

        def infer_step(b):
            outs = run(b[0])
            for o in outs[:nb]:  # scores are probabilities, as mtlrank's
                torch.sigmoid(o)

        with torch.inference_mode():
            report("infer", timed(infer_step))


if __name__ == "__main__":
    main(sys.argv[1:])
