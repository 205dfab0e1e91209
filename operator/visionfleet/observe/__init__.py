"""Read-only gatherers of the observed world (Kubernetes objects, Prometheus, drift monitors)."""
