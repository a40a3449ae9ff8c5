"""The Streamlit UI; talks to the query API over HTTP only."""
