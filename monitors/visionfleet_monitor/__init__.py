"""The drift monitor that runs beside each Triton deployment."""
