"""Pure rendering: a kind's spec -> the child manifests it wants (`common` holds what every kind shares)."""
