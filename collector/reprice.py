"""`agentflight reprice`: recompute the cost columns of stored spans with the current price table and
the projects' overrides, rewriting each span part as a new immutable part (the old one is retired).

Every column but the cost ones is carried over unchanged. Runs under the writer lock, so never beside
a running collector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from collector.pricing import Pricer
from store.lake import Lake, WriterLock
from store.schema import SPAN_SCHEMA

_COST_COLUMNS = ("cost_usd", "input_cost_usd", "output_cost_usd", "cost_status", "cost_source", "price_model")


@dataclass
class RepriceReport:
    parts: int = 0
    spans: int = 0
    changed: int = 0
    unknown: int = 0


def reprice_table(table: pa.Table, pricer: Pricer, report: RepriceReport) -> pa.Table:
    new: dict[str, list[object]] = {name: [] for name in _COST_COLUMNS}
    old_costs = table.column("cost_usd").to_pylist()
    for row, old_cost in zip(table.select(list(Pricer.ROW_COLUMNS)).to_pylist(), old_costs, strict=True):
        result = pricer.price_row(row)
        for name in _COST_COLUMNS:
            new[name].append(getattr(result, name))
        report.changed += result.cost_usd != old_cost
        report.unknown += result.cost_status == "unknown_model"
        report.spans += 1
    for name in _COST_COLUMNS:
        index = table.schema.get_field_index(name)
        table = table.set_column(index, SPAN_SCHEMA.field(name), pa.array(new[name], SPAN_SCHEMA.field(name).type))
    return table


def reprice_lake(lake_dir: Path, pricers: Callable[[str], Pricer], project: str | None = None) -> RepriceReport:
    lake = Lake(lake_dir, writer_id="reprice")
    lock = WriterLock(lake_dir).acquire()
    report = RepriceReport()
    try:
        for part in lake.parts("spans", project):
            table = pq.read_table(part.path, schema=SPAN_SCHEMA)
            repriced = reprice_table(table, pricers(part.project), report)
            lake.publish("spans", part.project, part.date, repriced, {"repriced": "true"})
            lake.retire([part])
            report.parts += 1
    finally:
        lock.release()
    return report
