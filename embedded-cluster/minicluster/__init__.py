"""An embedded Kubernetes cluster for tests and demos: a real control plane built from the
Kubernetes Go module (see ../minicp) plus a node agent that runs pods as local processes."""
