"""The query API: trace reconstruction, detectors, costs and read-only SQL."""
