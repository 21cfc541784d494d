#!/usr/bin/python3
"""gen_optim_reference.py — PyTorch reference values for moonflow's optimizer tests.

Runs torch.optim (SGD, Adam, AdamW, RMSprop, Adadelta, Adagrad; the single-tensor "for-loop"
implementations, foreach=False) on fixed tensors and writes
  tests/c/optim_reference.h      every optimizer and option combination, a few steps on one 3x5
                                 parameter with fixed gradients, float64 and float32: the
                                 parameter after each step and the state after the last one;
  tests/lua/optim_reference.lua  the Lua classes' problem: two parameters in two param groups
                                 (different hyper-parameters per group), gradients computed from
                                 the current values, the parameters after each step.
Run from anywhere with the system Python that has torch (1.13) and numpy:
  /usr/bin/python3 tests/tools/gen_optim_reference.py
"""
import os

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 4
SHAPE = (3, 5)
N = SHAPE[0] * SHAPE[1]

rng = np.random.default_rng(20240611)
P0 = np.round(rng.uniform(-1, 1, N), 3)
GRADS = np.round(rng.normal(0, 0.5, (STEPS, N)), 3)
GRADS[0][3] = 0.0  # a zero gradient (0/(0+eps) paths)
GRADS[1][7] = 0.0
GRADS[2][11] = 2.5  # a large one

SGD, ADAM, RMSPROP, ADADELTA, ADAGRAD = range(5)
KIND_NAMES = ["OPT_SGD", "OPT_ADAM", "OPT_RMSPROP", "OPT_ADADELTA", "OPT_ADAGRAD"]

# (name, kind, torch kwargs); AdamW is kind ADAM with decoupled weight decay
CASES = [
    ("sgd", SGD, dict(lr=0.1)),
    ("sgd_weight_decay", SGD, dict(lr=0.1, weight_decay=0.05)),
    ("sgd_maximize", SGD, dict(lr=0.1, maximize=True)),
    ("sgd_momentum", SGD, dict(lr=0.1, momentum=0.9)),
    ("sgd_dampening", SGD, dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("sgd_nesterov", SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("sgd_momentum_maximize", SGD, dict(lr=0.1, momentum=0.5, weight_decay=0.1, maximize=True)),
    ("adam_default", ADAM, dict()),
    ("adam", ADAM, dict(lr=0.05)),
    ("adam_betas_eps", ADAM, dict(lr=0.02, betas=(0.8, 0.95), eps=1e-3)),
    ("adam_weight_decay", ADAM, dict(lr=0.02, weight_decay=0.1)),
    ("adam_maximize", ADAM, dict(lr=0.02, weight_decay=0.1, maximize=True)),
    ("adamw_default", ADAM, dict(adamw=True)),
    ("adamw", ADAM, dict(adamw=True, lr=0.05, weight_decay=0.1)),
    ("adamw_maximize", ADAM, dict(adamw=True, lr=0.05, weight_decay=0.1, betas=(0.5, 0.9),
                                  maximize=True)),
    ("rmsprop_default", RMSPROP, dict()),
    ("rmsprop_alpha_eps", RMSPROP, dict(lr=0.01, alpha=0.9, eps=1e-4)),
    ("rmsprop_momentum", RMSPROP, dict(lr=0.01, momentum=0.9)),
    ("rmsprop_centered", RMSPROP, dict(lr=0.01, centered=True)),
    ("rmsprop_all", RMSPROP, dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
    ("rmsprop_maximize", RMSPROP, dict(lr=0.01, momentum=0.3, maximize=True)),
    ("adadelta_default", ADADELTA, dict()),
    ("adadelta_rho_eps", ADADELTA, dict(lr=0.5, rho=0.8, eps=1e-4)),
    ("adadelta_weight_decay", ADADELTA, dict(weight_decay=0.1)),
    ("adadelta_maximize", ADADELTA, dict(weight_decay=0.05, maximize=True)),
    ("adagrad_default", ADAGRAD, dict()),
    ("adagrad_lr_decay", ADAGRAD, dict(lr=0.1, lr_decay=0.1)),
    ("adagrad_weight_decay", ADAGRAD, dict(lr=0.1, weight_decay=0.1, eps=1e-3)),
    ("adagrad_initial", ADAGRAD, dict(lr=0.1, initial_accumulator_value=0.5)),
    ("adagrad_maximize", ADAGRAD, dict(lr=0.1, lr_decay=0.05, maximize=True)),
]

# the state tensors in the kernels' order (mf_*_step arguments) and their torch names
STATE = {
    SGD: ["momentum_buffer"],
    ADAM: ["exp_avg", "exp_avg_sq"],
    RMSPROP: ["square_avg", "momentum_buffer", "grad_avg"],
    ADADELTA: ["square_avg", "acc_delta"],
    ADAGRAD: ["sum"],
}


def make_opt(kind, params, kw):
    kw = dict(kw)
    if kind == SGD:
        return torch.optim.SGD(params, foreach=False, **kw)
    if kind == ADAM:
        if kw.pop("adamw", False):
            return torch.optim.AdamW(params, foreach=False, **kw)
        return torch.optim.Adam(params, foreach=False, **kw)
    if kind == RMSPROP:
        return torch.optim.RMSprop(params, foreach=False, **kw)
    if kind == ADADELTA:
        return torch.optim.Adadelta(params, foreach=False, **kw)
    return torch.optim.Adagrad(params, foreach=False, **kw)


def hparams(kind, opt):
    """The mf_optim_hparams fields (C designated initialisers) of the torch optimizer's group."""
    g = opt.param_groups[0]
    f = {"lr": g["lr"], "weight_decay": g.get("weight_decay", 0.0), "maximize": g["maximize"]}
    if kind == SGD:
        f.update(momentum=g["momentum"], dampening=g["dampening"], nesterov=g["nesterov"])
    elif kind == ADAM:
        f.update(beta1=g["betas"][0], beta2=g["betas"][1], eps=g["eps"],
                 decoupled_weight_decay=isinstance(opt, torch.optim.AdamW))
    elif kind == RMSPROP:
        f.update(alpha=g["alpha"], eps=g["eps"], momentum=g["momentum"], centered=g["centered"])
    elif kind == ADADELTA:
        f.update(alpha=g["rho"], eps=g["eps"])
    else:
        f.update(lr_decay=g["lr_decay"], eps=g["eps"],
                 initial_accumulator_value=g["initial_accumulator_value"])
    return f


def run_case(kind, kw, dtype):
    p = torch.tensor(P0, dtype=dtype).reshape(SHAPE)
    opt = make_opt(kind, [p], kw)
    params = []
    for k in range(STEPS):
        p.grad = torch.tensor(GRADS[k], dtype=dtype).reshape(SHAPE)
        opt.step()
        params.append(p.detach().flatten().tolist())
    st = opt.state[p]
    state = []
    for name in STATE[kind]:
        t = st.get(name)
        state.append(None if t is None else t.flatten().tolist())
    return params, state, hparams(kind, opt)


def c_num(v):
    return repr(float(v)) if v == v else "NAN"


def c_array(vals, indent):
    items = [c_num(v) for v in vals]
    lines, line = [], indent
    for it in items:
        if len(line) + len(it) + 2 > 100:
            lines.append(line.rstrip())
            line = indent
        line += it + ", "
    lines.append(line.rstrip())
    return "{\n" + "\n".join(lines) + "}"


def c_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return c_num(v)


def write_c():
    out = []
    out.append("/* optim_reference.h — PyTorch %s reference values for tests/c/test_optim.c.\n"
               " * Generated by tests/tools/gen_optim_reference.py (run it with /usr/bin/python3, which\n"
               " * has torch and numpy); do not edit by hand. torch.optim's single-tensor implementations\n"
               " * (foreach=False) ran each case for OPT_STEPS steps on a 3x5 parameter starting at OPT_P0\n"
               " * with the gradients OPT_GRADS[k] at step k + 1, once in float64 and once in float32.\n"
               " * param[d][k]: the parameter after step k + 1 (d = 0: float64, 1: float32);\n"
               " * state[d][i]: state tensor i (in the mf_*_step argument order, named by state_names[i],\n"
               " * NULL = not used) after the last step. Values are exact float32/float64 values. */\n"
               % torch.__version__)
    out.append("#ifndef MF_OPTIM_REFERENCE_H\n#define MF_OPTIM_REFERENCE_H\n")
    out.append("#include \"moonflow.h\"\n")
    out.append("#define OPT_STEPS %d\n#define OPT_N %d" % (STEPS, N))
    out.append("static const int64_t OPT_SHAPE[2] = {%d, %d};\n" % SHAPE)
    out.append("enum { OPT_SGD, OPT_ADAM, OPT_RMSPROP, OPT_ADADELTA, OPT_ADAGRAD };\n")
    out.append("typedef struct opt_case {\n  const char *name;\n  int kind;\n"
               "  mf_optim_hparams h; /* step is set by the test */\n"
               "  const char *state_names[3];\n"
               "  double param[2][OPT_STEPS][OPT_N];\n  double state[2][3][OPT_N];\n} opt_case;\n")
    out.append("static const double OPT_P0[OPT_N] = " + c_array(P0, "    ") + ";\n")
    out.append("static const double OPT_GRADS[OPT_STEPS][OPT_N] = {\n" +
               ",\n".join("  " + c_array(g, "    ") for g in GRADS) + "};\n")
    out.append("static const opt_case OPT_CASES[] = {")
    for name, kind, kw in CASES:
        r64 = run_case(kind, kw, torch.float64)
        r32 = run_case(kind, kw, torch.float32)
        h = r64[2]
        fields = ", ".join(".%s = %s" % (k, c_value(v)) for k, v in h.items())
        names = ", ".join('"%s"' % n if r64[1][i] is not None else "NULL"
                          for i, n in enumerate(STATE[kind]))
        out.append("  {.name = \"%s\",\n   .kind = %s,\n   .h = {%s},\n   .state_names = {%s},"
                   % (name, KIND_NAMES[kind], fields, names))
        for field, idx in (("param", 0), ("state", 1)):
            blocks = []
            for r in (r64, r32):
                rows = [v if v is not None else [0.0] * N for v in r[idx]]
                blocks.append("{" + ",\n".join(c_array(v, "      ") for v in rows) + "}")
            out.append("   .%s = {%s}," % (field, ",\n".join(blocks)))
        out.append("  },")
    out.append("};\n#define OPT_NCASES (int)(sizeof OPT_CASES / sizeof OPT_CASES[0])\n\n#endif")
    with open(os.path.join(ROOT, "tests/c/optim_reference.h"), "w") as f:
        f.write("\n".join(out) + "\n")


# ---- the Lua problem ------------------------------------------------------------------------
# w: 3x2, b: 2, in two param groups. Gradients from the current values:
#   grad_w = s * (w - tw)            grad_b = d * d * d + d, d = b - tb
LUA_STEPS = 5
W0 = [[0.5, -0.25], [1.0, 0.75], [-1.5, 0.125]]
TW = [[0.0, 1.0], [-1.0, 0.5], [2.0, -0.5]]
S = [[1.0, 2.0], [0.5, 3.0], [1.5, 0.25]]
B0 = [0.3, -0.7]
TB = [-0.2, 0.4]

LUA_CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9), dict(lr=0.05, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.5, dampening=0.1), dict(maximize=False, weight_decay=0.2)),
    ("Adam", dict(lr=0.05), dict(betas=(0.8, 0.99), weight_decay=0.1)),
    ("AdamW", dict(lr=0.05), dict(lr=0.1, weight_decay=0.5)),
    ("RMSprop", dict(lr=0.01, momentum=0.5), dict(centered=True)),
    ("Adadelta", dict(), dict(rho=0.5, lr=0.5)),
    # torch fills Adagrad's sum from the constructor's initial_accumulator_value, whatever a
    # group says: give it to the constructor
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
     dict(lr_decay=0.0, weight_decay=0.1)),
]


def lua_problem(cls, opts, group2, dtype):
    w = torch.tensor(W0, dtype=dtype)
    b = torch.tensor(B0, dtype=dtype)
    tw, s, tb = (torch.tensor(x, dtype=dtype) for x in (TW, S, TB))
    opt = getattr(torch.optim, cls)([{"params": [w]}, dict(group2, params=[b])], foreach=False,
                                    **opts)
    ws, bs = [], []
    for _ in range(LUA_STEPS):
        w.grad = s * (w - tw)
        d = b - tb
        b.grad = d * d * d + d
        opt.step()
        ws.append(w.tolist())
        bs.append(b.tolist())
    return ws, bs


def lua_value(v, indent=""):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(float(v)) if isinstance(v, float) else repr(v)
    if isinstance(v, str):
        return '"%s"' % v
    if isinstance(v, dict):
        return "{ " + ", ".join("%s = %s" % (k, lua_value(x)) for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "{ " + ", ".join(lua_value(x) for x in v) + " }"
    raise TypeError(v)


def write_lua():
    out = ["-- optim_reference.lua — PyTorch %s values for tests/lua/optim_spec.lua, generated by" %
           torch.__version__,
           "-- tests/tools/gen_optim_reference.py (/usr/bin/python3); do not edit by hand.",
           "-- The problem: w (3x2) in param group 1 and b (2) in group 2 (with the group2 options),",
           "-- gradients grad_w = s * (w - tw) and grad_b = d^3 + d with d = b - tb, computed from the",
           "-- current values before each step. w/b: the values after each step in float64, w32/b32",
           "-- in float32.",
           "return {",
           "  steps = %d," % LUA_STEPS,
           "  w0 = %s, b0 = %s," % (lua_value(W0), lua_value(B0)),
           "  tw = %s, tb = %s," % (lua_value(TW), lua_value(TB)),
           "  s = %s," % lua_value(S),
           "  cases = {"]
    for cls, opts, group2 in LUA_CASES:
        ws, bs = lua_problem(cls, opts, group2, torch.float64)
        ws32, bs32 = lua_problem(cls, opts, group2, torch.float32)
        lopts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}
        lg2 = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group2.items()}
        out.append("    { class = \"%s\", opts = %s, group2 = %s," % (cls, lua_value(lopts),
                                                                       lua_value(lg2)))
        out.append("      w = %s," % lua_value(ws))
        out.append("      b = %s," % lua_value(bs))
        out.append("      w32 = %s," % lua_value(ws32))
        out.append("      b32 = %s }," % lua_value(bs32))
    out.append("  },\n}")
    with open(os.path.join(ROOT, "tests/lua/optim_reference.lua"), "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    write_c()
    write_lua()
