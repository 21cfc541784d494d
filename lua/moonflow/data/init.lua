-- moonflow/data/init.lua — `mf.data`: data sets and loaders. Each data set is a submodule loaded
-- on first use (`mf.data.mnist` requires "moonflow.data.mnist"), the way moonflow/init.lua loads
-- mf.nn, mf.optim, ...; a name with no file stays nil.
return require("moonflow.util").lazy({}, "moonflow.data.", { init = true })
