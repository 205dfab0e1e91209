"""The drift monitor that runs beside each Triton deployment.

Importable without its dependencies: the operator takes the reference's file name from here.
"""

REFERENCE_FILE = "drift-reference.npz"  # written by the compile Job next to the artifact
