"""What a sweep found, computed once from MLflow and rendered many ways: rows, the Pareto front,
training figures, the table/CSV/JSON/Markdown, the PNG and HTML plots, the run descriptions, and
publishing them to MLflow. Nothing here loads torch or Ray."""

