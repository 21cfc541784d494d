#!/usr/bin/python3
"""gen_nn_reference.py — writes tests/c/nn_reference.h: PyTorch reference values for the
neural-network ops (conv2d forward and backward, max/avg pooling forward and backward,
softmax/log_softmax forward and backward) that tests/c/test_nn_ops.c compares against.

Run with the system Python, which has torch:  /usr/bin/python3 tests/tools/gen_nn_reference.py
Inputs are torch.randn under a fixed seed; everything is computed in float64. Asymmetric padding
is done as torch does it in user code: F.pad (zeros for convolution, -inf for max pooling) and
then an unpadded op.
"""
import os
import sys

import torch
import torch.nn.functional as F

torch.manual_seed(20240601)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "c", "nn_reference.h")

arrays = []  # C definitions of the value arrays


def arr(name, t):
    vals = t.detach().reshape(-1).tolist()
    ctype = "int64_t" if t.dtype == torch.int64 else "double"
    body = ",\n".join(
        "    " + ", ".join(repr(float(v)) if ctype == "double" else str(int(v)) for v in vals[i:i + 6])
        for i in range(0, len(vals), 6))
    arrays.append(f"static const {ctype} {name}[{max(len(vals), 1)}] = {{\n{body}\n}};")
    return name


def shape4(t):
    return "{" + ", ".join(str(s) for s in t.shape) + "}"


def conv_case(i, name, xs, ws, bias, stride, pad):
    """pad = (top, left, bottom, right)"""
    x = torch.randn(*xs, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*ws, dtype=torch.float64, requires_grad=True)
    b = torch.randn(ws[0], dtype=torch.float64, requires_grad=True) if bias else None
    xp = F.pad(x, (pad[1], pad[3], pad[0], pad[2]))
    y = F.conv2d(xp, w, b, stride=stride)
    dy = torch.randn_like(y)
    dx, dw = torch.autograd.grad(y, (x, w), dy)
    p = f"conv{i}"
    return (f'  {{"{name}", {shape4(x)}, {shape4(w)}, {shape4(y)}, {{{stride[0]}, {stride[1]}}}, '
            f'{{{", ".join(map(str, pad))}}}, {arr(p + "_x", x)}, {arr(p + "_w", w)}, '
            f'{arr(p + "_b", b) if bias else "NULL"}, {arr(p + "_y", y)}, {arr(p + "_dy", dy)}, '
            f'{arr(p + "_dx", dx)}, {arr(p + "_dw", dw)}}}')


def pool_case(i, name, kind, xs, k, stride, pad, include_pad=True):
    x = torch.randn(*xs, dtype=torch.float64, requires_grad=True)
    if kind == "max":
        xp = F.pad(x, (pad[1], pad[3], pad[0], pad[2]), value=float("-inf"))
        y, idx = F.max_pool2d(xp, k, stride, return_indices=True)
        # indices into the padded plane -> into the unpadded one
        Wp = xs[3] + pad[1] + pad[3]
        ih, iw = idx // Wp - pad[0], idx % Wp - pad[1]
        idx = ih * xs[3] + iw
    else:
        assert pad[0] == pad[2] and pad[1] == pad[3], "avg pooling reference: symmetric padding"
        y = F.avg_pool2d(x, k, stride, (pad[0], pad[1]), count_include_pad=include_pad)
        idx = None
    dy = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, (x,), dy)
    p = f"pool{i}"
    return (f'  {{"{name}", {int(kind == "max")}, {int(include_pad)}, {shape4(x)}, {shape4(y)}, '
            f'{{{k[0]}, {k[1]}}}, {{{stride[0]}, {stride[1]}}}, {{{", ".join(map(str, pad))}}}, '
            f'{arr(p + "_x", x)}, {arr(p + "_y", y)}, '
            f'{arr(p + "_idx", idx) if idx is not None else "NULL"}, {arr(p + "_dy", dy)}, '
            f'{arr(p + "_dx", dx)}}}')


def softmax_case(i, name, log, shape, dim):
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True) * 3
    y = (F.log_softmax if log else F.softmax)(x, dim)
    dy = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, (x,), dy)
    p = f"sm{i}"
    sh = "{" + ", ".join(str(s) for s in shape) + "}"
    return (f'  {{"{name}", {int(log)}, {len(shape)}, {sh}, {dim}, {arr(p + "_x", x)}, '
            f'{arr(p + "_y", y)}, {arr(p + "_dy", dy)}, {arr(p + "_dx", dx)}}}')


convs = [
    conv_case(0, "5x5 same, 2->3 channels", (2, 2, 6, 5), (3, 2, 5, 5), True, (1, 1), (2, 2, 2, 2)),
    conv_case(1, "3x2 stride 2x1, asymmetric padding", (2, 2, 7, 6), (3, 2, 3, 2), True, (2, 1),
              (1, 0, 2, 1)),
    conv_case(2, "1x1 stride 2, no bias", (1, 3, 5, 5), (2, 3, 1, 1), False, (2, 2), (0, 0, 0, 0)),
    conv_case(3, "5x5 same, 1 input channel", (2, 1, 7, 6), (3, 1, 5, 5), True, (1, 1),
              (2, 2, 2, 2)),
]
pools = [
    pool_case(0, "max 2x2 stride 2, odd width", "max", (2, 2, 6, 7), (2, 2), (2, 2), (0, 0, 0, 0)),
    pool_case(1, "max 3x3 stride 2, padding 1", "max", (2, 2, 7, 8), (3, 3), (2, 2), (1, 1, 1, 1)),
    pool_case(2, "max 2x3 stride 1x2, asymmetric padding", "max", (1, 2, 5, 6), (2, 3), (1, 2),
              (0, 1, 1, 2)),
    pool_case(3, "avg 3x3 stride 2, padding 1, count_include_pad", "avg", (2, 2, 7, 6), (3, 3),
              (2, 2), (1, 1, 1, 1), True),
    pool_case(4, "avg 3x3 stride 2, padding 1, exclude pad", "avg", (2, 2, 7, 6), (3, 3), (2, 2),
              (1, 1, 1, 1), False),
]
softmaxes = [
    softmax_case(0, "log_softmax 4x7 dim 2", True, (4, 7), 1),
    softmax_case(1, "softmax 3x5x4 dim 2", False, (3, 5, 4), 1),
    softmax_case(2, "log_softmax 3x5x4 dim 1", True, (3, 5, 4), 0),
    softmax_case(3, "softmax 2x33 dim 2", False, (2, 33), 1),
]

with open(OUT, "w") as f:
    f.write(f"""/* nn_reference.h — PyTorch {torch.__version__} reference values for tests/c/test_nn_ops.c.
 * Generated by tests/tools/gen_nn_reference.py (run it with /usr/bin/python3, which has torch);
 * do not edit by hand. Inputs are torch.randn under a fixed seed; outputs and gradients were
 * computed by torch in float64 (F.conv2d, F.max_pool2d, F.avg_pool2d, F.softmax, F.log_softmax
 * and torch.autograd.grad with the output gradient dy). Asymmetric padding was applied with F.pad
 * before an unpadded op. Pool indices are flat ih * W + iw in the unpadded input plane. Dims in
 * the case names are 1-based; `dim` fields are 0-based. */

#ifndef MF_NN_REFERENCE_H
#define MF_NN_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

""")
    f.write("\n".join(arrays) + "\n\n")
    f.write("""typedef struct nn_conv_ref {
  const char *name;
  int64_t x_shape[4], w_shape[4], y_shape[4];
  int stride[2], pad[4]; /* pad: top, left, bottom, right */
  const double *x, *w, *b, *y, *dy, *dx, *dw; /* b NULL: no bias */
} nn_conv_ref;

typedef struct nn_pool_ref {
  const char *name;
  int is_max, count_include_pad;
  int64_t x_shape[4], y_shape[4];
  int kernel[2], stride[2], pad[4];
  const double *x, *y;
  const int64_t *idx; /* max pooling only */
  const double *dy, *dx;
} nn_pool_ref;

typedef struct nn_softmax_ref {
  const char *name;
  int is_log, ndim;
  int64_t shape[4];
  int dim;
  const double *x, *y, *dy, *dx;
} nn_softmax_ref;

""")
    f.write("static const nn_conv_ref NN_CONV_REFS[] = {\n" + ",\n".join(convs) + "\n};\n\n")
    f.write("static const nn_pool_ref NN_POOL_REFS[] = {\n" + ",\n".join(pools) + "\n};\n\n")
    f.write("static const nn_softmax_ref NN_SOFTMAX_REFS[] = {\n" + ",\n".join(softmaxes) +
            "\n};\n\n#endif\n")
print("wrote", os.path.relpath(OUT), file=sys.stderr)
