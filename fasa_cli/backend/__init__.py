"""The training backend: profiles and one config template over mmdet, run in child processes."""

from fasa_cli.backend.run import evaluate_run, run_training

__all__ = ["run_training", "evaluate_run"]
