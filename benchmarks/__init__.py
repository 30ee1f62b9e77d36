"""Benchmarks of the FASA suite (run each as `python -m benchmarks.<name>`)."""
