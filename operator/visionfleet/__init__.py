"""VisionFleet: compile a vision model per node class, roll it out on Triton, roll back on SLO or drift."""

__version__ = "0.1.0"
