#!/usr/bin/python3
"""torch_mnist.py — the PyTorch peer of bench/mnist.lua: the TensorFlow tutorial's softmax
regression and CNN, the same models, batch sizes, steps, optimizers and data as moonflow's, timed
the same way. Prints one JSON line with the measurements.

  /usr/bin/python3 bench/torch_mnist.py softmax --threads 2 [--steps 1000]
  /usr/bin/python3 bench/torch_mnist.py cnn --threads 1 --steps 200 [--batch 50]
  /usr/bin/python3 bench/torch_mnist.py infer --threads 2 [--batch 1000]
  python3 bench/torch_mnist.py cnn --device cuda --steps 20000 --warmup 0 --accuracy
      (the tutorial's full run on a GPU: tests/gpu/run.sh's peer of examples/mnist_cnn.lua
      --device cuda; the data stays on the CPU and each batch is copied over, as moonflow's does)

Data: the MNIST .gz IDX files in $MOONFLOW_DATA (or ../shared/data/mnist).
"""
import argparse
import gzip
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def data_dir():
    d = os.environ.get("MOONFLOW_DATA")
    if d:
        return d
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "shared", "data", "mnist")


def read_idx(name):
    path = os.path.join(data_dir(), name)
    opener = gzip.open if os.path.exists(path + ".gz") else open
    with opener(path + ".gz" if os.path.exists(path + ".gz") else path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load():
    xtr = read_idx("train-images-idx3-ubyte").reshape(-1, 784).astype(np.float32) / 255
    ytr = read_idx("train-labels-idx1-ubyte").astype(np.int64)
    xte = read_idx("t10k-images-idx3-ubyte").reshape(-1, 784).astype(np.float32) / 255
    yte = read_idx("t10k-labels-idx1-ubyte").astype(np.int64)
    # the tutorial's split: the first 5000 training images are validation
    return (torch.from_numpy(xtr[5000:]), torch.from_numpy(ytr[5000:]),
            torch.from_numpy(xte), torch.from_numpy(yte))


def batches(n, batch, steps, seed):
    """Shuffled epochs of indices, batch after batch, like DataSet.next_batch."""
    g = np.random.default_rng(seed)
    perm, at = g.permutation(n), 0
    for _ in range(steps):
        if at + batch > n:
            perm, at = g.permutation(n), 0
        yield torch.from_numpy(perm[at:at + batch])
        at += batch


class CNN(nn.Module):
    """conv 5x5x32 same + ReLU + pool, conv 5x5x64 + ReLU + pool, fc 3136→1024 + ReLU + dropout,
    fc 1024→10 (NCHW, as moonflow's benchmark uses)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(7 * 7 * 64, 1024)
        self.fc2 = nn.Linear(1024, 10)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.1, a=-0.2, b=0.2)
                nn.init.constant_(m.bias, 0.1)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x.view(-1, 1, 28, 28))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.dropout(F.relu(self.fc1(x.flatten(1))), 0.5, self.training)
        return self.fc2(x)


def sync(dev):
    if dev != "cpu":
        torch.cuda.synchronize()


def accuracy(model, x, y, dev, batch=1000):
    model.eval()
    with torch.no_grad():
        hits = sum((model(x[i:i + batch].to(dev)).argmax(1) == y[i:i + batch].to(dev)).sum().item()
                   for i in range(0, len(x), batch))
    model.train()
    return hits / len(x)


def run_softmax(a, xtr, ytr, xte, yte):
    dev = a.device
    W = torch.zeros(784, 10, device=dev, requires_grad=True)
    b = torch.zeros(10, device=dev, requires_grad=True)
    opt = torch.optim.SGD([W, b], lr=0.5)
    t0 = time.perf_counter()
    for idx in batches(len(xtr), 100, a.steps, 1):
        loss = F.cross_entropy(xtr[idx].to(dev) @ W + b, ytr[idx].to(dev))
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(dev)
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        acc = ((xte.to(dev) @ W + b).argmax(1) == yte.to(dev)).float().mean().item()
    return {"train_s": train_s, "accuracy": acc}


def run_cnn(a, xtr, ytr, xte, yte):
    torch.manual_seed(1)
    dev = a.device
    model = CNN().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    it = batches(len(xtr), a.batch, a.steps + a.warmup, 1)

    def step(idx):
        loss = F.cross_entropy(model(xtr[idx].to(dev)), ytr[idx].to(dev))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    for _, idx in zip(range(a.warmup), it):
        loss = step(idx)
    sync(dev)
    t0 = time.perf_counter()
    for idx in it:
        loss = step(idx)
    sync(dev)
    dt = time.perf_counter() - t0
    out = {"train_images_per_s": a.steps * a.batch / dt, "train_s": dt, "loss": loss.item()}
    if a.accuracy:
        out["accuracy"] = accuracy(model, xte, yte, dev)
    return out


def run_infer(a, xtr, ytr, xte, yte):
    torch.manual_seed(1)
    dev = a.device
    model = CNN().to(dev).eval()
    with torch.no_grad():
        model(xte[:a.batch].to(dev))  # warm-up
        sync(dev)
        t0 = time.perf_counter()
        n = 0
        for i in range(0, len(xte) - a.batch + 1, a.batch):
            model(xte[i:i + a.batch].to(dev))
            n += a.batch
        sync(dev)
        dt = time.perf_counter() - t0
    return {"infer_images_per_s": n / dt}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["softmax", "cnn", "infer"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--accuracy", action="store_true")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    a.steps = a.steps or {"softmax": 1000, "cnn": 200, "infer": 0}[a.what]
    a.batch = a.batch or {"softmax": 100, "cnn": 50, "infer": 1000}[a.what]
    data = load()
    res = {"softmax": run_softmax, "cnn": run_cnn, "infer": run_infer}[a.what](a, *data)
    res.update(peer="pytorch " + torch.__version__, what=a.what, threads=a.threads,
               steps=a.steps, batch=a.batch, device=a.device,
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(res))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
