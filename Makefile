# The README's two commands: `make demo` and `make test` (`make lint`: ruff, as CI runs it). Set-up is idempotent:
# a stamp file skips it when done.
PY      := .venv/bin/python
STAMP   := .venv/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo simulate test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v chromium >/dev/null && command -v pg_ctlcluster >/dev/null || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium postgresql) >/dev/null
	@test -x $(PY) || python3 -m venv .venv
	@# torch first, pinned, so that nothing pulls a multi-GB CUDA build
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	@touch $(STAMP)

demo: setup
	.venv/bin/vrlhf demo

simulate: setup
	.venv/bin/vrlhf demo --simulate

test: setup
	$(PY) -m pytest -q tests

lint: setup
	.venv/bin/ruff check .

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf .venv runs work
