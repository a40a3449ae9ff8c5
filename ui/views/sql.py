"""SQL: one read-only SELECT over the project's lake views through the API's sandbox (POST /sql), with example
queries to start from, the result as a table and a CSV download.

Results are data: shown in a table only. The API's refusals (400 not a SELECT, 408 too slow, 413 too many rows)
are shown as an error with the message in a code block, since a database message can quote stored values.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import streamlit as st

from ui.client import ApiError
from ui.common import call, client, empty_state
from ui.render import clean, show_table

# From README "Example queries".
EXAMPLES = {
    "cost per user per day": """-- cost per user per day
-- (model calls only: agent spans may repeat their children's usage)
SELECT user_id, strftime(to_timestamp(start_time_unix_nano / 1e9), '%Y-%m-%d') AS day,
       sum(cost_usd) AS cost_usd, sum(input_tokens + output_tokens) AS tokens
FROM spans WHERE span_type IN ('llm', 'embedding') GROUP BY ALL ORDER BY day, cost_usd DESC""",
    "tokens per tool": """-- tokens per tool
SELECT tool_name, count(*) AS calls FROM spans WHERE span_type = 'tool' GROUP BY ALL ORDER BY calls DESC""",
    "cost by prompt version": """-- cost by prompt version
SELECT prompt_name, prompt_version, sum(cost_usd) FROM spans GROUP BY ALL""",
    "models with no price": """-- which models have no price?
SELECT provider, coalesce(response_model, request_model) AS model, count(*)
FROM spans WHERE cost_status = 'unknown_model' GROUP BY ALL""",
    "slowest tool calls": """-- slowest tool calls
SELECT tool_name, (end_time_unix_nano - start_time_unix_nano) / 1e6 AS duration_ms, trace_id
FROM spans WHERE span_type = 'tool' ORDER BY duration_ms DESC LIMIT 20""",
}


def _use_example() -> None:
    chosen = st.session_state.get("sql_example")
    if chosen in EXAMPLES:
        st.session_state["sql_text"] = EXAMPLES[chosen]
        st.session_state["sql_run_now"] = True


def _column(name: str, values: list[Any]) -> pl.Series:
    if any(isinstance(v, dict | list) for v in values):
        values = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
    try:
        return pl.Series(name, values, strict=False)
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
        return pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String)


def result_frame(data: dict[str, Any]) -> pl.DataFrame:
    """The JSON rows as a frame; repeated column names (SELECT 1, 1) get a suffix, nested values become JSON."""
    names: list[str] = []
    for column in data["columns"]:
        name, n = str(column["name"]), 2
        while name in names:
            name, n = f"{column['name']}_{n}", n + 1
        names.append(name)
    rows = data["rows"]
    return pl.DataFrame([_column(name, [row[i] for row in rows]) for i, name in enumerate(names)])


def run(sql: str) -> dict[str, Any]:
    """The outcome of one query: its rows, or the API's refusal."""
    try:
        with st.spinner("Running the query…"):
            return {"sql": sql, "data": client().sql(sql, "json").json()}
    except ApiError as exc:
        return {"sql": sql, "error": exc.summary, "detail": exc.detail}


def show(outcome: dict[str, Any]) -> None:
    if "error" in outcome:
        st.error(outcome["error"])  # our own words; the API's message may quote stored data: shown as code
        if outcome.get("detail"):
            st.code(clean(outcome["detail"]), language="text")
        return
    data = outcome["data"]
    frame = result_frame(data)
    st.caption(f"{data['row_count']:,} rows · {len(data['columns'])} columns")
    show_table(frame)
    st.download_button(
        "Download as CSV", frame.write_csv(), file_name="agentflight-query.csv", mime="text/csv", on_click="ignore"
    )
    with st.expander("Column types"):
        show_table(
            pl.DataFrame(
                {"column": frame.columns, "type": [str(c["type"]) for c in data["columns"]]},
                schema={"column": pl.String, "type": pl.String},
            ),
        )


def main() -> None:
    st.title("SQL")
    anything = call(lambda: client().get("/traces", limit=1), "Looking for traces")
    if anything is None:
        return
    if not anything["traces"]:
        empty_state()
    st.caption(
        "One read-only SELECT over this project's views: spans, events, spans_with_content, span_content, "
        "spans_raw, events_raw (README: Schema). Long or huge queries are stopped: add a LIMIT or aggregate."
    )
    if "sql_text" not in st.session_state:
        st.session_state["sql_text"] = EXAMPLES["cost per user per day"]
    st.selectbox(
        "Example queries",
        ["", *EXAMPLES],
        key="sql_example",
        on_change=_use_example,
        format_func=lambda e: e or "pick an example…",
    )
    sql = st.text_area("Query", key="sql_text", height=180)
    clicked = st.button("Run", type="primary")
    if (clicked or st.session_state.pop("sql_run_now", False)) and sql.strip():
        st.session_state["sql_outcome"] = run(sql)
    outcome = st.session_state.get("sql_outcome")
    if outcome is not None:
        if outcome["sql"] != sql:
            st.caption("The result below is of the previous query; press Run for this one.")
        show(outcome)


main()
