-- moonflow/gradgradcheck.lua — `mf.gradgradcheck(fn, inputs [, opts])`: second derivatives (mf.grad
-- with create_graph) against float64 finite differences, like torch.autograd.gradgradcheck. The
-- code lives beside mf.gradcheck in gradcheck.lua; mf loads this file on first use of the name.
return require("moonflow.gradcheck").gradgradcheck
