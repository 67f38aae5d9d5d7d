"""pollkit: submit, poll and download long-running generation jobs."""
