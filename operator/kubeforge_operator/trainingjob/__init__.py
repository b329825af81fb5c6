"""The TrainingJob kind: its policy (`decide`, a checklist of steps, one module each) and how the
controller core observes it (its child kinds and the progress probe)."""
