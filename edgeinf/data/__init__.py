"""Data helpers shared by the build and device sides (numpy only)."""
from edgeinf.data.corrupt import CORRUPTIONS, MAX_SEVERITY, GradedSet, corrupt, graded_set

__all__ = ["CORRUPTIONS", "MAX_SEVERITY", "GradedSet", "corrupt", "graded_set"]
