"""ualign's served pick beside Label Studio and Potato, in one run (`make bench-peers`; issue #26).

The same task on each: 2,000 prompts, two candidate responses each, the annotator picks the one
they prefer; each prompt can be annotated 30 times (ualign: 10 items a prompt, quota 3; the
peers: one task a prompt, at most 30 annotations). One run, for each tool in turn:
1. installs the peer, the first time, in its own virtual environment under var/peers/ (pinned in
   bench/peers/requirements-<tool>.txt), and sets it up from scratch (a throwaway PostgreSQL
   database for ualign and Label Studio, a throwaway task directory for Potato);
2. serves it as its documentation recommends for production, on 127.0.0.1:
   - ualign: `scripts/serve-prod` (gunicorn, Celery worker and beat), as `make bench-load`;
   - Label Studio: uWSGI with the settings of its Docker image's deploy/uwsgi.ini (two processes
     per core) behind nginx, as its Docker Compose file runs it (bench/peers/label-studio-*),
     PostgreSQL (`DJANGO_DB=default`), DEBUG off;
   - Potato: gunicorn with one worker and 8 threads, the factory its deploy tooling runs
     (`potato.flask_server:create_app('config.yaml')`; more workers are refused: it keeps its
     state in memory), with the settings its `deploy` hardening sets (debug off, persisted
     sessions, a fixed secret key);
3. drives it with locust, headless, with the same profile (bench/locustfile_annotate.py for
   ualign, bench/peers/locustfile_peers.py for the peers): closed-loop annotators (starting
   logged in: ualign's as joined participants, Label Studio's with a session made server-side;
   Potato's join by a crowd link, which costs nothing), then annotators who log in or join over
   HTTP and think 3-8 s per task;
4. reads the CPU that the tool's own processes and its database backends used (from /proc,
   sampled), and, after stopping the server, counts what its store holds against the
   annotations it acknowledged.

It prints the section for docs/benchmarks.md and, with --write, replaces it there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE), str(ROOT / "bench")]

import load_annotate as ua  # noqa: E402  (ualign's served pick: its study, serve-prod, locust run, checks)
from _report import command_line, publish  # noqa: E402

VAR = ROOT / "var" / "peers"
LOCUSTFILE = HERE / "locustfile_peers.py"
HEADING = "## ualign beside Label Studio and Potato: annotations/s, p99, CPU, what is kept (issue #26)"
TOOLS = ("ualign", "label-studio", "potato")
PACKAGES = {"label-studio": "label-studio", "potato": "potato-annotation"}
PROMPTS = 2000
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # Debian's nginx-light (apt-get install nginx-light)
PER_PROMPT = 30  # ualign: 10 replicate items a prompt x quota 3
SHARE = 50  # tasks per annotator, as ualign's study (a Prolific participant does 20-50)


@dataclass
class Outcome:
    """One tool's figures: its two locust runs, CPU and what its store kept."""

    tool: str
    version: str = ""
    serving: str = ""
    phases: dict[str, ua.Phase] = field(default_factory=dict)
    server_cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds of the tool's processes + DB
    saved: int | None = None
    store: str = ""
    checks: dict[str, int] = field(default_factory=dict)
    error: str = ""
    load_before: tuple[float, ...] = ()  # the machine's load average as this tool's turn began
    requests: dict[str, dict[str, float]] = field(default_factory=dict)  # closed loop, by request name


def _arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated, run in this order")
    parser.add_argument("--server-url", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument("--web-concurrency", default=os.environ.get("WEB_CONCURRENCY", "3"))
    parser.add_argument("--closed-users", type=int, default=100)
    parser.add_argument("--closed-seconds", type=int, default=60)
    # 100, not bench-load's 300: Label Studio's login hashes the password (PBKDF2, about a second of
    # CPU here under load), so 300 arrivals would keep its two cores busy for the whole run.
    parser.add_argument("--think-users", type=int, default=100)
    parser.add_argument("--think-seconds", type=int, default=90)
    parser.add_argument("--python", default=os.environ.get("PEERS_PYTHON", "python3.11"),
                        help="the interpreter the peers' virtual environments are made from")  # fmt: skip
    parser.add_argument("--write", type=Path, help="replace this section of docs/benchmarks.md")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(args.tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))} (known: {', '.join(TOOLS)})")
    return args


def prompts(n: int = PROMPTS) -> list[dict]:
    """The prompts and their two responses, as `load_annotate.build_study` writes ualign's."""
    return [{"id": f"p{i}", "prompt": f"Prompt {i}: explain **why** the sky is blue.",
             "responses": [f"Answer {j} to prompt {i}:\n\n- Rayleigh scattering\n- *shorter* wavelengths"
                           for j in (0, 1)]} for i in range(n)]  # fmt: skip


def potato_rows(items: list[dict]) -> list[dict]:
    """Potato's data file: one item a prompt, the prompt and both responses in its text."""
    return [{"id": p["id"], "text": f"{p['prompt']}\n\nResponse 1: {p['responses'][0]}\n\n"
                                    f"Response 2: {p['responses'][1]}"} for p in items]  # fmt: skip


def potato_config(secret_key: str) -> str:
    """Potato's config.yaml for the task (YAML is a superset of JSON: written as JSON)."""
    config = {
        "annotation_task_name": "Pairwise preference",
        "task_dir": ".",
        "output_annotation_dir": "annotation_output/",
        "data_files": ["data.jsonl"],
        "item_properties": {"id_key": "id", "text_key": "text"},
        "login": {"type": "url_direct", "url_argument": "PROLIFIC_PID"},  # Prolific's study link
        "user_config": {"allow_all_users": True},
        "max_annotations_per_item": PER_PROMPT,
        # ualign's share (items_per_participant = 50 in load_annotate's study); left unset, Potato
        # assigns every annotator all 2,000 items when they join (9 s a join here).
        "max_annotations_per_user": SHARE,
        "debug": False,  # what `potato deploy`'s harden_config sets
        "persist_sessions": True,
        "secret_key": secret_key,
        "annotation_schemes": [{"annotation_type": "radio", "name": "preference",
                                "description": "Which response is better?",
                                "labels": ["Response 1", "Response 2"]}],  # fmt: skip
    }
    return json.dumps(config, indent=2) + "\n"


def count_potato(output_dir: Path) -> dict[str, int]:
    """Annotations in Potato's store: each annotator's user_state.json maps instance → labels."""
    per_item: dict[str, int] = {}
    users = 0
    for state_file in output_dir.glob("*/user_state.json"):
        labels = json.loads(state_file.read_text()).get("instance_id_to_label_to_value") or {}
        users += 1
        for instance, values in labels.items():
            if values:
                per_item[instance] = per_item.get(instance, 0) + 1
    return {"saved": sum(per_item.values()), "annotators": users,
            "items_over_quota": sum(1 for n in per_item.values() if n > PER_PROMPT)}  # fmt: skip


def count_label_studio(database_url: str, project: int) -> dict[str, int]:
    """Annotations in Label Studio's store (table task_completion), read with ualign's psycopg."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        saved, twice = conn.execute(
            """SELECT count(*), count(*) - count(DISTINCT (task_id, completed_by_id)) FROM task_completion
               WHERE project_id = %s AND was_cancelled = false""", [project]).fetchone()  # fmt: skip
        over = conn.execute(
            """SELECT count(*) FROM (SELECT task_id FROM task_completion WHERE project_id = %s
               GROUP BY task_id HAVING count(*) > %s) t""", [project, PER_PROMPT]).fetchone()[0]  # fmt: skip
    return {"saved": saved, "annotated_twice_by_one_user": twice, "items_over_quota": over}


def read_requests(stats_csv: Path) -> dict[str, dict[str, float]]:
    """Each request's count, p50 and p99 (ms) from a locust stats file, the aggregate left out."""
    import csv

    if not stats_csv.exists():
        return {}
    with stats_csv.open(newline="") as rows:
        return {row["Name"]: {"count": int(row["Request Count"]), "p50": float(row["50%"] or 0),
                              "p99": float(row["99%"] or 0)}
                for row in csv.DictReader(rows) if row["Name"] != "Aggregated"}  # fmt: skip


class ServerCpu:
    """CPU seconds (user + system) of a server's processes, those of its session (it is started in
    a session of its own), and of the PostgreSQL backends connected to its database (their command
    line names it), sampled from /proc every half second so that processes which exit during the
    run (a recycled worker, a closed connection) count up to their last sample. Children's reaped
    times are left out: a recycled worker would otherwise count twice."""

    def __init__(self, session: int, database: str | None) -> None:
        self.session, self.database = session, database
        self.tick = os.sysconf("SC_CLK_TCK")
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _scan(self) -> dict[int, float]:
        seen: dict[int, float] = {}
        needle = f" {self.database} ".encode() if self.database else None
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
                fields = text.rsplit(")", 1)[1].split()
                ours = int(fields[3]) == self.session  # field 6 of stat: the session id
                if not ours and needle is not None and text[text.index("(") + 1 : text.rindex(")")] == "postgres":
                    ours = needle in (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ") + b" "
            except (OSError, ValueError, IndexError):  # it exited meanwhile
                continue
            if ours:
                seen[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime
        return seen

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.last.update(self._scan())

    def __enter__(self) -> ServerCpu:
        self.first = self._scan()
        self.last = dict(self.first)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.last.update(self._scan())

    @property
    def seconds(self) -> float:
        return sum(value - self.first.get(pid, 0.0) for pid, value in self.last.items())


def ensure_venv(tool: str, python: str) -> Path:
    """The tool's own virtual environment under var/peers/, installed from its pinned requirements
    the first time (and again when they change); returns its bin/ folder."""
    venv, requirements = VAR / tool, HERE / f"requirements-{tool}.txt"
    stamp = venv / ".installed-requirements"
    if stamp.exists() and stamp.read_text() == requirements.read_text():
        return venv / "bin"
    VAR.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    print(f"installing {tool} into {venv} (pinned in {requirements.relative_to(ROOT)})", flush=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-r",
                    str(requirements)], check=True, timeout=3000)  # fmt: skip
    stamp.write_text(requirements.read_text())
    return venv / "bin"


def _version(bin_dir: Path, package: str) -> str:
    done = subprocess.run([str(bin_dir / "python"), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    return done.stdout.strip() or "?"


def _start(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def _stop(server: subprocess.Popen, grace: float = 40) -> None:
    """SIGTERM to the server's session (every process it started), then SIGKILL to what is left of
    it after `grace` seconds."""
    deadline = time.monotonic() + grace
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    while time.monotonic() < deadline and _in_session(server.pid):  # uWSGI's workers outlive its bash
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)  # anything of its session still there
    server.wait()


def _in_session(session: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) == session:
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def _drive(outcome: Outcome, args: argparse.Namespace, base_url: str, tmp: Path, session: int,
           database: str | None, extra_env: dict[str, str] | None, study: tuple[str, str] = ("", "")) -> None:
    """A warm-up, then the two locust runs against a served tool, each with the CPU of the tool's
    processes. The warm-up (4 annotators who join or log in over HTTP, 15 s, not reported) lets
    each tool load what it loads lazily: Potato's first save took 9 s of a 15 s trial run. What
    it saves counts in the check of the store against the acknowledged annotations."""
    locustfile = ua.LOCUSTFILE if extra_env is None else LOCUSTFILE
    warm_env = {"BENCH_PARTICIPANTS": ""} if extra_env is None else {**extra_env, "BENCH_PREPARED": ""}
    outcome.phases["warm-up"] = ua._run_locust(ua.Phase(f"{outcome.tool}, warm-up", 4, 15), "ClosedLoopAnnotator",
                                               base_url, tmp, study, 4, locustfile=locustfile, extra_env=warm_env)  # fmt: skip
    runs = [("closed", ua.Phase(f"{outcome.tool}, closed loop", args.closed_users, args.closed_seconds),
             "ClosedLoopAnnotator", 50, {"BENCH_PREPARED": "1"}),
            ("think", ua.Phase(f"{outcome.tool}, 3-8 s think time", args.think_users, args.think_seconds),
             "RealisticAnnotator", max(1, args.think_users // 10), {"BENCH_PREPARED": ""})]  # all within 10 s  # fmt: skip
    for key, phase, user_class, spawn_rate, prepared in runs:
        env = None if extra_env is None else {**extra_env, **prepared}
        with ServerCpu(session, database) as cpu:
            outcome.phases[key] = ua._run_locust(phase, user_class, base_url, tmp, study, spawn_rate,
                                                 locustfile=locustfile, extra_env=env)  # fmt: skip
        outcome.server_cpu_s[key] = round(cpu.seconds, 2)
        if key == "closed":
            outcome.requests = read_requests(tmp / f"{ua.stats_prefix(phase)}_stats.csv")
        print(f"{phase.name}: {phase.rps:.1f} annotations/s, p50 {phase.p50:.0f} ms, p99 {phase.p99:.0f} ms, "
              f"acknowledged {phase.acknowledged}, server CPU {cpu.seconds:.1f} s", flush=True)  # fmt: skip


def run_ualign(args: argparse.Namespace, tmp: Path) -> Outcome:
    """ualign served by scripts/serve-prod, as `make bench-load` serves it, with its study."""
    outcome = Outcome("ualign", version=_git_version(), serving=(
        f"scripts/serve-prod: gunicorn, {args.web_concurrency} sync workers (ualign_web/gunicorn_conf.py), "
        "Celery worker and beat; PostgreSQL, DB_CONN_MAX_AGE=60; DEBUG off"), store="PostgreSQL (studies_judgment)")  # fmt: skip
    database = f"ualign_peers_ualign_{os.getpid()}"
    database_url, port = f"{args.server_url}/{database}", ua._free_port()
    env = ua._server_env(argparse.Namespace(redis_url=args.redis_url, web_concurrency=args.web_concurrency),
                         database_url, port, tmp)  # fmt: skip
    ua._admin_sql(args.server_url, f'CREATE DATABASE "{database}"')
    server = None
    try:
        os.environ.update({k: env[k] for k in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL",
                                               "STATIC_ROOT", "UALIGN_VAR_DIR")})  # fmt: skip
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ualign_web.settings")
        sys.path.insert(0, str(ROOT))
        import django
        from django.core.management import call_command
        from django.db import connections

        django.setup()
        call_command("migrate", verbosity=0)
        study = ua.build_study(PROMPTS * 10, SHARE)  # 2,000 prompts x 10 items, quota 3
        (tmp / "participants.json").write_text(json.dumps(ua.prepare_participants(study[0], args.closed_users)))
        connections.close_all()
        log = tmp / "serve-prod.log"
        server = _start([str(ROOT / "scripts" / "serve-prod")], ROOT, env, log)
        base_url = f"http://127.0.0.1:{port}"
        ua._wait_for_health(base_url, server, log)
        _drive(outcome, args, base_url, tmp, server.pid, database, None, study)
        _stop(server)
        server = None
        outcome.checks = ua._check_database(study[0])
        outcome.saved = outcome.checks.pop("judgments")
        connections.close_all()
    finally:
        if server is not None:
            _stop(server)
        ua._admin_sql(args.server_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return outcome


def run_label_studio(args: argparse.Namespace, tmp: Path) -> Outcome:
    """Label Studio under uWSGI as its Docker image runs it, on its own PostgreSQL database."""
    bin_dir = ensure_venv("label-studio", args.python)
    outcome = Outcome("label-studio", version=_version(bin_dir, "label-studio"),
                      store="PostgreSQL (task_completion)")  # fmt: skip
    database, port, password = f"ualign_peers_ls_{os.getpid()}", ua._free_port(), secrets.token_urlsafe(12)
    package = Path(subprocess.run([str(bin_dir / "python"), "-c", "import label_studio, os; "
                                   "print(os.path.dirname(label_studio.__file__))"],
                                  capture_output=True, text=True, check=True, timeout=300).stdout.strip())  # fmt: skip
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "core.settings.label_studio", "DJANGO_DB": "default",
           "POSTGRE_NAME": database, "POSTGRE_USER": "postgres", "POSTGRE_PASSWORD": "",
           "POSTGRE_HOST": "127.0.0.1", "POSTGRE_PORT": "5432", "DEBUG": "false", "LOG_LEVEL": "WARNING",
           "LABEL_STUDIO_BASE_DATA_DIR": str(tmp / "label-studio-data"), "SENTRY_DSN": "",
           "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false", "PYTHONPATH": str(package)}  # fmt: skip
    env.pop("DATABASE_URL", None)
    outcome.serving = (f"uWSGI {_version(bin_dir, 'pyuwsgi')} with bench/peers/label-studio-uwsgi.ini (its image's "
                       f"deploy/uwsgi.ini: {2 * (os.cpu_count() or 1)} processes, 1 thread each, cheaper, lazy-apps) "
                       f"behind {_nginx_version()} (bench/peers/label-studio-nginx.conf, from the image's "
                       "deploy/default.conf); PostgreSQL (DJANGO_DB=default); DEBUG off")  # fmt: skip
    ua._admin_sql(args.server_url, f'CREATE DATABASE "{database}"')
    server = None
    try:
        spec = tmp / "ls-spec.json"
        spec.write_text(json.dumps({"prompts": str(tmp / "prompts.json"), "annotators": max(args.closed_users,
                                    args.think_users), "password": password, "per_prompt": PER_PROMPT}))  # fmt: skip
        setup = tmp / "ls-setup.json"
        subprocess.run([str(bin_dir / "python"), str(HERE / "ls_setup.py"), "setup", str(spec), str(setup)],
                       env=env, check=True, timeout=900)  # fmt: skip
        project = json.loads(setup.read_text())["project"]
        log, upstream = tmp / "label-studio.log", ua._free_port()
        nginx_dir = tmp / "nginx"
        nginx_dir.mkdir()
        conf = (HERE / "label-studio-nginx.conf").read_text()
        for name, value in (("DIR", str(nginx_dir)), ("PORT", str(port)), ("UPSTREAM", str(upstream))):
            conf = conf.replace(f"@{name}@", value)
        (nginx_dir / "nginx.conf").write_text(conf)
        uwsgi = [str(bin_dir / "uwsgi"), "--ini", str(HERE / "label-studio-uwsgi.ini"), "--chdir", str(package),
                 "--http", f"127.0.0.1:{upstream}"]  # fmt: skip
        nginx = [NGINX, "-p", str(nginx_dir), "-e", str(nginx_dir / "nginx-error.log"), "-c",
                 str(nginx_dir / "nginx.conf")]  # fmt: skip
        # One session for both, so that their CPU is counted together and one signal stops both.
        script = f"{shlex.join(uwsgi)} & {shlex.join(nginx)} & wait"
        server = _start(["bash", "-c", script], package, env, log)
        base_url = f"http://127.0.0.1:{port}"
        _wait_for(base_url + "/health", server, log)
        extra = {"BENCH_TOOL": "label-studio", "BENCH_PARTICIPANTS": str(setup), "BENCH_PASSWORD": password}
        _drive(outcome, args, base_url, tmp, server.pid, database, extra)
        _stop(server)
        server = None
        outcome.checks = count_label_studio(f"{args.server_url}/{database}", project)
        outcome.saved = outcome.checks.pop("saved")
    finally:
        if server is not None:
            _stop(server)
        ua._admin_sql(args.server_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return outcome


def run_potato(args: argparse.Namespace, tmp: Path) -> Outcome:
    """Potato under gunicorn, one worker with 8 threads, as its deploy tooling runs it."""
    bin_dir = ensure_venv("potato", args.python)
    outcome = Outcome("potato", version=_version(bin_dir, "potato-annotation"),
                      store="files: annotation_output/<annotator>/user_state.json")  # fmt: skip
    outcome.serving = (f"gunicorn {_version(bin_dir, 'gunicorn')}, 1 worker x 8 threads (gthread), "
                       "potato.flask_server:create_app('config.yaml'); debug off, persist_sessions, fixed secret_key")  # fmt: skip
    task_dir, port = tmp / "potato-task", ua._free_port()
    task_dir.mkdir()
    (task_dir / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in potato_rows(prompts())))
    (task_dir / "config.yaml").write_text(potato_config(secrets.token_hex(32)))
    env = {**os.environ, "HOME": str(task_dir), "POTATO_NONINTERACTIVE": "1"}
    log = tmp / "potato.log"
    server = _start([str(bin_dir / "gunicorn"), "--workers", "1", "--threads", "8", "--bind", f"127.0.0.1:{port}",
                     "--log-level", "warning", "potato.flask_server:create_app('config.yaml')"], task_dir, env, log)  # fmt: skip
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_for(base_url + "/health", server, log)
        _drive(outcome, args, base_url, tmp, server.pid, None, {"BENCH_TOOL": "potato", "BENCH_PARTICIPANTS": ""})
        _stop(server)
        server = None
        outcome.checks = count_potato(task_dir / "annotation_output")
        outcome.saved = outcome.checks.pop("saved")
    finally:
        if server is not None:
            _stop(server)
    return outcome


def _wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"no answer from {url} after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _nginx_version() -> str:
    done = subprocess.run([NGINX, "-v"], capture_output=True, text=True)
    return done.stderr.strip().replace("nginx version: ", "") or "nginx"


def _git_version() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return f"commit {done.stdout.strip()}" if done.returncode == 0 else "this checkout"


RUNNERS = {"ualign": run_ualign, "label-studio": run_label_studio, "potato": run_potato}


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    tmp_root = Path(tempfile.mkdtemp(prefix="ualign-bench-peers-"))
    (tmp_root / "prompts.json").write_text(json.dumps(prompts()))
    load, started = tuple(round(x, 2) for x in os.getloadavg()), datetime.now(UTC)
    outcomes = []
    for tool in args.tools:
        tmp = tmp_root / tool
        tmp.mkdir()
        (tmp / "prompts.json").write_text((tmp_root / "prompts.json").read_text())
        print(f"--- {tool}", flush=True)
        tool_load = tuple(round(x, 2) for x in os.getloadavg())
        try:
            outcome = RUNNERS[tool](args, tmp)
        except (RuntimeError, subprocess.SubprocessError, OSError) as error:
            print(f"{tool} failed: {error}", flush=True)
            outcome = Outcome(tool, error=str(error)[-1500:])
        outcome.load_before = tool_load
        outcomes.append(outcome)
    from peers_report import section

    text = section(outcomes, args, load, started, ua._machine(), command_line("bench/peers/run_peers.py", argv))
    publish(text, HEADING, args.write)
    if args.out:
        args.out.write_text(json.dumps([_as_json(o) for o in outcomes], indent=2))
    print(f"work files: {tmp_root}")


def _as_json(outcome: Outcome) -> dict:
    from dataclasses import asdict

    return asdict(outcome)


if __name__ == "__main__":
    main()
