"""The Kubeforge dashboard: data access and view models."""
