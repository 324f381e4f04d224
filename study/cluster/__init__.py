"""A study on a Ray cluster: every node checked against the stores (nodes), studies submitted
as Ray Jobs (jobs), a lean MLflow tracking server for a team (mlflow_server), and their
commands of `loopstudy` (cli)."""
