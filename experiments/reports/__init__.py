"""Reports: the declared metrics, Markdown tables, plots, a run's results."""
