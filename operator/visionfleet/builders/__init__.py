"""Pure manifest builders (compile Jobs, Triton Deployments, Services, routes)."""
