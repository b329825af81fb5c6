"""The Kubeforge trainer: what runs inside training pods."""
