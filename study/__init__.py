"""The study service: study specs, Ray Tune runs, MLflow tracking, the `loopstudy` CLI."""
