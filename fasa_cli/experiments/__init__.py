"""Experiment specs, the result store, tables and the report.

Modules: spec (load_spec, ExperimentSpec),
store (ResultStore), execute (execute_run, run_ablation, Runner), tables (spec_table),
report (write_report), compare (build_compare_spec). Import them directly; this package
imports nothing so the backend's child processes stay light.
"""
