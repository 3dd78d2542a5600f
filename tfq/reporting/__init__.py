"""The report's machinery: reading the result files, formatting numbers, the figures and each section of report.md."""
