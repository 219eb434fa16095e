"""The nurses' console: the morning checklist, status, live readings, the local web console."""
