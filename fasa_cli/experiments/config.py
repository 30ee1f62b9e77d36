"""Moved: RunConfig, FASASettings and TrainOverrides live in fasa_cli.runconfig, which both
`experiments/` and `backend/` import downwards. This alias keeps imports that are still in
flight working; new code imports fasa_cli.runconfig (tests/methods checks the package does)."""

from fasa_cli.runconfig import FASASettings, RunConfig, TrainOverrides  # noqa: F401
