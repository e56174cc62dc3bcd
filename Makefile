# ualign: `make run` serves a study with its worker; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3.11
# The tests use PostgreSQL and Redis; these are the defaults of this machine's services.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/ualign
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
PYTEST_ARGS ?=

.PHONY: install run serve-prod worker test test-slow lint typecheck fmt migrations-check check ci bench bench-all bench-load bench-pick bench-results bench-intervals browser bench-doctor-effect bench-sequential bench-allocation bench-peers bench-adversary bench-gc proxy

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-models.txt
	@scripts/install $(VENV) $(PYTHON)
	@touch $@

install: $(VENV)/.installed

# Debian's Chromium for the browser tests (Playwright drives it; it downloads no browser).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

# Debian's nginx-light: the picks' route is tested through it (tests/test_picks_route.py), and the
# load benches serve behind it. Not a dependency of the app.
proxy:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || (apt-get update -qq && apt-get install -y -qq nginx-light)

# The README's main command: serve ualign with its worker and prepare the demo study.
run: install
	$(PY) manage.py serve --demo

# Production on one machine: check --deploy, migrate, collectstatic, then gunicorn + Celery worker
# + Celery beat (scripts/serve-prod; needs DEBUG=false, SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL, REDIS_URL).
serve-prod: install
	scripts/serve-prod

worker: install
	$(VENV)/bin/celery -A ualign_web worker -Q gpu,default --concurrency 1 --loglevel INFO

test: install browser proxy
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(VENV)/bin/pytest $(PYTEST_ARGS)

test-slow: install
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(VENV)/bin/pytest -m slow $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check workers/generation workers/populations workers/policies workers/stats

# mypy with the django-stubs plugin; what it checks, and how strictly, is in pyproject.toml.
typecheck: install
	$(VENV)/bin/mypy

fmt: install
	$(VENV)/bin/ruff check --fix .

check: install
	$(PY) manage.py check

migrations-check: install
	$(PY) manage.py makemigrations --check --dry-run

ci:
	bash .ci/run

# Benchmarks print their tables; docs/benchmarks.md keeps the last results with machine and date.
bench: install
	$(PY) bench/bench_policies.py
	$(PY) bench/bench_bootstrap.py

# The long ones: 1M-row export against PostgreSQL's COPY, and the real SmolLM2 on the CPU.
bench-all: bench
	$(PY) bench/bench_export.py
	$(PY) bench/bench_generation.py
	$(PY) bench/bench_pipeline.py

# The annotator's path under load, served by serve-prod (issue #14): /healthz and picks with locust,
# on 127.0.0.1 only, in a throwaway database (BENCH_PG: the PostgreSQL server; REDIS_URL: a Redis db).
# The annotator's path served, with the arrival burst; e.g. BENCH_LOAD_ARGS="--burst-users 1000".
# Served behind nginx as docs/deployment.md deploys it (Debian's nginx-light; where it cannot be
# installed, the bench says so: BENCH_LOAD_ARGS="--serve direct" runs it without).
bench-load: install
	@command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx-light) || true
	$(PY) bench/load_annotate.py $(BENCH_LOAD_ARGS)

# ualign's served pick beside Label Studio and Potato (issue #26): each peer in its own virtual
# environment under var/peers/ (installed from PyPI the first time, pinned in bench/peers/), all
# served on 127.0.0.1 and driven with the same locust profile; writes its docs/benchmarks.md section.
# Label Studio is served behind nginx, as in its Docker Compose deployment: Debian's nginx-light.
bench-peers: install
	@command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx-light)
	$(PY) bench/peers/run_peers.py --write docs/benchmarks.md

# A pick's Python and PostgreSQL CPU in one process, plain SQL against prepared statements.
bench-pick: install
	$(PY) bench/pick_cost.py --write docs/benchmarks.md

# A web worker's full garbage collection, with gunicorn's pre_fork freeze and without.
bench-gc: install
	$(PY) bench/gc_pause.py --write docs/benchmarks.md

# The results page at 1,000,000 judgments, served from its snapshot, against a full recompute.
bench-results: install
	$(PY) bench/bench_results.py

# Coverage and width of the cell interval on fractional credits, before and after issue #21's floor.
bench-intervals: install
	$(PY) bench/bench_interval_coverage.py --write docs/benchmarks.md

# LLMdoctor's effect (issue #23): a doctor per persona on training prompts, judged by MiniLM on
# held-out prompts, over β; writes docs/benchmarks.md, docs/llmdoctor.md and docs/figures/.
# Sized for about 30 min on two free CPU cores (not yet timed); BENCH_ARGS="--prompts 12 --steps 40 --betas 0,0.5,1" for a reduced run.
bench-doctor-effect: install
	$(PY) bench/bench_doctor_effect.py --write $(BENCH_ARGS)

# Anytime-valid monitoring and the stopping rules (issue #22): error, coverage and judgments to an answer.
bench-sequential: install
	$(PY) bench/bench_sequential.py --write docs/benchmarks.md

# Adaptive allocation (the periodic job's rule) + anytime-valid stopping against the fixed design (#22).
bench-allocation: install
	$(PY) bench/bench_allocation.py --write docs/benchmarks.md

# The annotators' adversary against the model's: bias and coverage of the people's true f(k) (#21).
bench-adversary: install
	$(PY) bench/bench_annotators_adversary.py --write docs/benchmarks.md
	$(PY) bench/bench_annotators_adversary.py --calibrate --studies 100 --write docs/benchmarks.md
