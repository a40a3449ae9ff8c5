"""The demo: a small travel agent, the local stub LLM it talks to, and the scenarios `agentflight demo` runs."""
