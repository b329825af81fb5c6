"""The Kubeforge API contract: typed models of the TrainingJob and ServingJob resources."""
