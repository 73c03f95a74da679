"""The figure kinds ``iommusim plot --kind`` offers (importable without matplotlib)."""

KINDS = ("latency", "ops", "flushes", "timeline", "sweep", "reach")
