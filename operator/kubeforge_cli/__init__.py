"""The `kubeforge` command: a thin layer above the operator (`kubeforge run` drives its policy on
local processes) and the trainer (`kubeforge compress`); neither of them imports it."""
