"""The ServingJob kind: which artifact to serve (model resolution), the policy (`decide`) and how
the controller core observes it (its child kinds, the referenced TrainingJobs)."""
