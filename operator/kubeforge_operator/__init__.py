"""The Kubeforge operator: reconciles TrainingJobs and ServingJobs into pods."""
