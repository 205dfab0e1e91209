"""The drift monitor that runs beside each Triton deployment. Its reference file's format and name
are the shared contract's (``visionfleet_contract.reference``): the compile Job writes it."""
