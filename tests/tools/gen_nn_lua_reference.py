#!/usr/bin/python3
"""gen_nn_lua_reference.py — writes tests/lua/fixtures/nn_reference.lua: PyTorch's values for the
layers and losses of mf.nn, checked by tests/lua/nn_spec.lua and tests/lua/nn_loss_spec.lua.

Run from the repository root with the Python that has torch and numpy:
    /usr/bin/python3 tests/tools/gen_nn_lua_reference.py

Inputs come from numpy's RandomState(seed), rounded to float32 values (so that float32 and
float64 runs see the same numbers); every result is computed by torch in float64. Layouts follow
moonflow's: tensors are nested lists, class indices are 1-based, NHWC cases store NHWC tensors,
and TensorFlow's "same" padding (out = ceil(in / stride), the odd cell after) is made with F.pad.
"""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
rs = np.random.RandomState(1234)


def rnd(*shape, scale=1.0):
    return torch.tensor(rs.randn(*shape).astype(np.float32).astype(np.float64) * scale)


def uni(lo, hi, *shape):
    return torch.tensor(rs.uniform(lo, hi, size=shape).astype(np.float32).astype(np.float64))


def lua(v):
    """A Lua literal for nested lists / numbers / strings / dicts."""
    if isinstance(v, torch.Tensor):
        v = v.detach().tolist()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "0/0"
        if math.isinf(v):
            return "math.huge" if v > 0 else "-math.huge"
        return repr(v)
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, (list, tuple)):
        return "{ " + ", ".join(lua(x) for x in v) + " }"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {lua(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def same_pad(n, k, s):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def tf_same(x, kh, kw, sh, sw, value=0.0):
    """x NCHW padded for TensorFlow's SAME."""
    t, b = same_pad(x.shape[2], kh, sh)
    l, r = same_pad(x.shape[3], kw, sw)
    return F.pad(x, (l, r, t, b), value=value), (t, l, b, r)


ref = {}

# ---- Linear -----------------------------------------------------------------------------------
x, w, b = rnd(3, 4), rnd(5, 4), rnd(5)
ref["linear"] = dict(x=x, weight=w, bias=b, y=F.linear(x, w, b))

# ---- Conv2d -----------------------------------------------------------------------------------
x, w, b = rnd(2, 3, 7, 6), rnd(4, 3, 3, 2), rnd(4)
ref["conv_nchw"] = dict(x=x, weight=w, bias=b, stride=[2, 1], padding=1,
                        y=F.conv2d(x, w, b, stride=(2, 1), padding=1))

x, w = rnd(1, 2, 5, 6), rnd(3, 2, 3, 3)
pad = [1, 0, 2, 1]  # top, left, bottom, right
ref["conv_asym_nobias"] = dict(x=x, weight=w, padding=pad,
                               y=F.conv2d(F.pad(x, (pad[1], pad[3], pad[0], pad[2])), w))

x, w, b = rnd(2, 7, 6, 3), rnd(4, 3, 3, 3), rnd(4)  # x NHWC
xp, _ = tf_same(x.permute(0, 3, 1, 2), 3, 3, 2, 2)
ref["conv_same_nhwc"] = dict(x=x, weight=w, bias=b, stride=2, padding="same",
                             y=F.conv2d(xp, w, b, stride=2).permute(0, 2, 3, 1))

x, w, b = rnd(1, 2, 5, 5), rnd(3, 2, 4, 4), rnd(3)
xp, _ = tf_same(x, 4, 4, 1, 1)
ref["conv_same_even"] = dict(x=x, weight=w, bias=b, stride=1, padding="same",
                             y=F.conv2d(xp, w, b))

# ---- pooling ----------------------------------------------------------------------------------
x = rnd(2, 3, 7, 6)
ref["max_pool"] = dict(x=x, k=3, stride=2, padding=1, y=F.max_pool2d(x, 3, 2, 1))
ref["avg_pool"] = dict(x=x, k=3, stride=2, padding=1,
                       y=F.avg_pool2d(x, 3, 2, 1, count_include_pad=True))
ref["avg_pool_k2s1"] = dict(x=x, k=2, stride=1, padding=0, y=F.avg_pool2d(x, 2, 1))

x = rnd(2, 7, 6, 3)  # NHWC
xn = x.permute(0, 3, 1, 2)
xp, _ = tf_same(xn, 3, 3, 2, 2, value=-math.inf)
ref["max_pool_same_nhwc"] = dict(x=x, k=3, stride=2, padding="same",
                                 y=F.max_pool2d(xp, 3, 2).permute(0, 2, 3, 1))
xp, _ = tf_same(xn, 3, 3, 2, 2)
ones, _ = tf_same(torch.ones_like(xn), 3, 3, 2, 2)
avg = F.avg_pool2d(xp, 3, 2) / F.avg_pool2d(ones, 3, 2)  # TF: the padding is not counted
ref["avg_pool_same_nhwc"] = dict(x=x, k=3, stride=2, padding="same", y=avg.permute(0, 2, 3, 1))

# ---- softmax and activations ------------------------------------------------------------------
x = rnd(2, 3, 4)
ref["softmax"] = dict(x=x, dim2=F.softmax(x, 1), dimlast=F.softmax(x, -1),
                      log_dim2=F.log_softmax(x, 1), log_dimlast=F.log_softmax(x, -1))
big = torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, 0.0, 1000.0]])
ref["softmax_big"] = dict(x=big, y=F.softmax(big, -1), logy=F.log_softmax(big, -1))
x = torch.tensor([-2.5, -1.0, 0.0, 0.5, 3.0])
ref["activations"] = dict(x=x, relu=F.relu(x), sigmoid=torch.sigmoid(x), tanh=torch.tanh(x))

# ---- BatchNorm --------------------------------------------------------------------------------


def batchnorm_case(shape, n, steps=3):
    bn = torch.nn.BatchNorm1d(n) if len(shape) < 4 else torch.nn.BatchNorm2d(n)
    bn = bn.double()
    w, b = uni(0.5, 1.5, n), rnd(n)
    with torch.no_grad():
        bn.weight.copy_(w)
        bn.bias.copy_(b)
    xs, ys, means, vars_ = [], [], [], []
    bn.train()
    for i in range(steps):
        x = rnd(*shape, scale=2.0) + 0.5
        xs.append(x)
        ys.append(bn(x).detach())
        means.append(bn.running_mean.clone())
        vars_.append(bn.running_var.clone())
    bn.eval()
    xe = rnd(*shape)
    return dict(weight=w, bias=b, xs=xs, ys=ys, running_mean=means, running_var=vars_,
                x_eval=xe, y_eval=bn(xe).detach())


ref["batchnorm1d"] = batchnorm_case((4, 3), 3)
ref["batchnorm1d_3d"] = batchnorm_case((4, 3, 2), 3)
ref["batchnorm2d"] = batchnorm_case((2, 3, 4, 5), 3)

# ---- losses -----------------------------------------------------------------------------------
logits = rnd(4, 5, scale=2.0)
target = torch.tensor([1, 0, 4, 2])
probs = F.softmax(rnd(4, 5), -1)
ce = {}
for r in ("mean", "sum", "none"):
    ce[r] = F.cross_entropy(logits, target, reduction=r)
    ce["probs_" + r] = F.cross_entropy(logits, probs, reduction=r)
ce["smooth"] = F.cross_entropy(logits, target, label_smoothing=0.1)
ce["probs_smooth"] = F.cross_entropy(logits, probs, label_smoothing=0.1)
logits3 = rnd(2, 4, 3)
target3 = torch.tensor([[0, 3, 1], [2, 2, 0]])
ref["cross_entropy"] = dict(logits=logits, target=(target + 1).tolist(), probs=probs,
                            logits3=logits3, target3=(target3 + 1).tolist(),
                            y3=F.cross_entropy(logits3, target3), **ce)
logp = F.log_softmax(logits, -1)
ref["nll_loss"] = dict(logp=logp, target=(target + 1).tolist(),
                       mean=F.nll_loss(logp, target), sum=F.nll_loss(logp, target, reduction="sum"))

a, t = rnd(3, 4), rnd(3, 4)
ref["mse_loss"] = {r: F.mse_loss(a, t, reduction=r) for r in ("mean", "sum", "none")}
ref["mse_loss"].update(input=a, target=t)
ref["l1_loss"] = {r: F.l1_loss(a, t, reduction=r) for r in ("mean", "sum", "none")}
ref["l1_loss"].update(input=a, target=t)

x = torch.tensor([[-50.0, -3.0, -0.5, 0.0], [0.25, 2.0, 7.5, 50.0]])
y = torch.tensor([[0.0, 1.0, 0.25, 1.0], [0.0, 0.5, 1.0, 0.0]])
ref["bce_with_logits"] = dict(
    x=x, y=y, mean=F.binary_cross_entropy_with_logits(x, y),
    none=F.binary_cross_entropy_with_logits(x, y, reduction="none"),
    pos_weight=F.binary_cross_entropy_with_logits(x, y, pos_weight=torch.tensor(2.0),
                                                  reduction="sum"))
p = uni(0.05, 0.95, 2, 3)
yb = torch.tensor([[0.0, 1.0, 1.0], [0.3, 0.0, 1.0]])
ref["bce"] = dict(p=p, y=yb, mean=F.binary_cross_entropy(p, yb),
                  none=F.binary_cross_entropy(p, yb, reduction="none"))

# ---- write ------------------------------------------------------------------------------------
here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "..", "lua", "fixtures", "nn_reference.lua")
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    f.write("-- nn_reference.lua — PyTorch %s values (float64) for tests/lua/nn_spec.lua and\n"
            "-- nn_loss_spec.lua, generated by tests/tools/gen_nn_lua_reference.py (/usr/bin/python3);\n"
            "-- do not edit by hand. Class indices are 1-based; NHWC cases hold NHWC tensors.\n"
            % torch.__version__)
    f.write("return {\n")
    for k, v in ref.items():
        f.write(f"  {k} = {lua(v)},\n")
    f.write("}\n")
print("wrote", os.path.normpath(out))
