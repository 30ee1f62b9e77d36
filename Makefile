# The two commands of the README: `make demo` (the main job) and `make test`.
# Both build .venv/ first if needed (scripts/setup_env.sh; cached mmcv wheel in ~/.cache/fasa).
PY := .venv/bin/python
FASA := .venv/bin/fasa
SETUP := .venv/.fasa-setup-done

.PHONY: setup test demo bench doctor clean-runs

$(SETUP): pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh

setup: $(SETUP)

test: $(SETUP)
	$(PY) -m pytest

# Table 1 (baseline / FA / FA+FS x 3 seeds) on the embedded data with the CPU profile, Table 8
# (TIDE errors) from the same runs, then results/REPORT.md. Finished runs are kept: re-running
# resumes where it stopped, and with every record committed it only rebuilds the report.
# One torch thread per run, two runs side by side: the setting of the committed records, so a
# run made here is bit-identical to them on this machine type whatever its core count.
DEMO_JOBS ?= 2
demo: $(SETUP)
	FASA_NUM_THREADS=1 $(FASA) ablate table1 --jobs $(DEMO_JOBS)
	FASA_NUM_THREADS=1 $(FASA) ablate table8
	$(FASA) report

bench: $(SETUP)
	$(PY) -m benchmarks.bench_core
	$(PY) -m benchmarks.bench_eval
	$(PY) -m benchmarks.bench_inference
	$(PY) -m benchmarks.bench_train_step
	$(PY) -m benchmarks.bench_compile
	$(PY) -m benchmarks.bench_methods

doctor: $(SETUP)
	$(FASA) doctor
