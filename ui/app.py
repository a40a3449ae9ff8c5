"""The Streamlit UI entry point (`agentflight ui`): navigation between the pages under ui/views/."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "views"  # not "pages/": Streamlit would auto-discover that folder


def main() -> None:
    st.set_page_config(page_title="agentflight", layout="wide")
    navigation = st.navigation(
        [
            st.Page(PAGES / "traces.py", title="Traces", default=True, url_path="traces"),
            st.Page(PAGES / "replay.py", title="Replay", url_path="replay"),
            st.Page(PAGES / "flags.py", title="Flags", url_path="flags"),
            st.Page(PAGES / "readiness.py", title="Readiness", url_path="readiness"),
            st.Page(PAGES / "costs.py", title="Costs", url_path="costs"),
            st.Page(PAGES / "sessions.py", title="Sessions", url_path="sessions"),
            st.Page(PAGES / "users.py", title="Users", url_path="users"),
            st.Page(PAGES / "sql.py", title="SQL", url_path="sql"),
        ]
    )
    navigation.run()


main()
