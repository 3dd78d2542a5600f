"""Where the study runs: one process, or Ray tasks over processes and machines."""
