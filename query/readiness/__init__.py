"""The production-readiness report: per service, over a time range, which practices hold, with proving traces.

report.py builds it (one module per section, each DuckDB SQL over the temp tables scope.py prepares from the
API's index), text.py prints it for `agentflight report`, route.py serves `GET /readiness`.
"""
