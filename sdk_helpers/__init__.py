"""What agent code imports to emit good spans to agentflight."""
