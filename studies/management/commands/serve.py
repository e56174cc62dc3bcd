"""The main job: migrate, make sure there is an admin, and run the web server, a Celery worker
and Celery beat together (beat sends the periodic sweep that gives back abandoned seats and
assignments; its schedule file is settings.CELERY_BEAT_SCHEDULE_FILENAME, under var/). Ctrl-C
stops all three. The worker and beat write their logs to var/worker.log and var/beat.log; the
terminal gets a line each, and the last lines of whichever process stops on its own.

With --demo (what `make run` uses) it also sets up the demo study (studies/demo.py), prepares
it on the worker, makes it live once it is ready, and prints the annotator link, the admin and
results URLs and the admin credentials."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from studies import demo as demo_setup
from studies.management.commands.ensure_admin import ensure_admin
from studies.models import Study


def check_port_free(addr: str) -> None:
    """Refuse to start when the web server's address is taken (another ualign, often), before
    anything starts: otherwise the demo would say it is live and then the server would die."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    host = "0.0.0.0" if host == "0" else host
    if not port.isdigit():
        raise CommandError(f"--addr {addr!r}: expected host:port, for example 127.0.0.1:8000")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no conflict
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            raise CommandError(
                f"Can't serve on {addr}: {exc.strerror or exc}. Another ualign (or another program) is probably "
                f"listening there. Stop it, or choose another address, for example:\n"
                f"    python manage.py serve --demo --addr 127.0.0.1:{int(port) + 1}"
            ) from None


def server_answers(site_url: str) -> bool:
    """Whether the web server answers its liveness probe (ualign_web.health) within a second."""
    try:
        with urllib.request.urlopen(f"{site_url.rstrip('/')}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:  # refused while it starts, or a timeout: not yet
        return False


@dataclass
class Background:
    """A process serve started: its name for the terminal, and its log file when it has one."""

    name: str
    process: subprocess.Popen
    log_path: Path | None = None

    def tail(self, lines: int = 15) -> str:
        assert self.log_path is not None
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return "".join(deque(log, maxlen=lines))


class Command(BaseCommand):
    help = "Run ualign: the web server, a Celery worker and beat, on embedded defaults unless configured."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000", help="host:port for the web server")
        parser.add_argument("--no-worker", action="store_true", help="run the web server only (no worker, no beat)")
        parser.add_argument("--demo", action="store_true",
                            help="set up the demo study, prepare it on the worker and make it live when ready")

    def handle(self, *args, addr: str, no_worker: bool, demo: bool = False, **options) -> None:
        # Ctrl-C (SIGINT) stops everything even when this process started with SIGINT ignored: a
        # background job of a non-interactive shell (a script's `&`, nohup, some CI runners) starts
        # so, and Python then installs no KeyboardInterrupt handler; the worker and beat, which set
        # their own, would stop on it while this command went on serving.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        check_port_free(addr)
        if not os.environ.get("SITE_URL"):
            # Links printed here and the simulated annotators' requests (from the worker) go to this server.
            os.environ["SITE_URL"] = settings.SITE_URL = f"http://{addr}"
        self.demo_study: Study | None = None
        host, _, port = addr.rpartition(":")
        self.local_url = f"http://{'127.0.0.1' if host.strip('[]') in ('', '0', '0.0.0.0') else host}:{port}"
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write(f"Database: {settings.DATABASES['default']['NAME']}  broker: {settings.CELERY_BROKER_URL}")
        username, password = ensure_admin()
        processes = []
        if not no_worker:
            processes += [self._start_worker(), self._start_beat()]
        web = subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload", addr])
        processes.append(Background("web server", web))
        self.stdout.write(self.style.SUCCESS(f"\nAdmin:    http://{addr}/admin/"))
        self.stdout.write(f"Login:    {username} / {password or '(set with manage.py changepassword)'}")
        if demo:
            self._start_demo(username, password)
        self.stdout.write("Press Ctrl-C to stop the web server, the worker and beat.\n")
        self._wait(processes)

    def _start_demo(self, username: str, password: str | None) -> None:
        study = self.demo_study = demo_setup.ensure_demo_study()
        self.demo_credentials = (username, password)
        self.demo_announced = False  # announced by _tick_demo once it is live and the server answers
        message = demo_setup.resume(study)
        if message:
            self.stdout.write(message)
        links = demo_setup.links(study)
        self.stdout.write(f"Progress: {links.jobs}")

    def _announce_demo(self) -> None:
        study = self.demo_study
        assert study is not None  # announced only after _start_demo
        links = demo_setup.links(study)
        username, password = self.demo_credentials
        self.stdout.write(self.style.SUCCESS("\nThe demo study is live."))
        self.stdout.write(f"Annotate: {links.annotator}")
        self.stdout.write(f"Results:  {links.results}   (log in to the admin first)")
        self.stdout.write(f"Admin:    {links.admin}   login {username} / {password or '(set with manage.py changepassword)'}")
        self.stdout.write(
            f"Simulated annotators: press “Pilot with simulated annotators” on the study's admin page, or\n"
            f"          python manage.py simulate_annotators {study.slug} --pilot -n 10\n"
            f"          (both run them on a pilot copy: the study's own places stay for people)\n"
        )

    def _tick_demo(self) -> None:
        if self.demo_study is None or self.demo_announced:
            return
        try:
            message = demo_setup.advance(self.demo_study)
        except Exception as exc:  # a locked SQLite file or a racing admin click: try again next tick
            self.stderr.write(f"Demo: {exc}")
            return
        self._print_progress()
        if message:
            self.stdout.write(message)
        error = demo_setup.failure(self.demo_study)
        if error and self.demo_study.status == "draft":
            self.stderr.write(f"The demo's preparation failed: {error}\nRestart to retry.")
            self.demo_announced = True
        elif self.demo_study.status == "live" and server_answers(self.local_url):
            # Live is not enough: on a restart the study is live at once, seconds before the web
            # server listens, and a link printed then would be refused.
            self.demo_announced = True
            self._announce_demo()

    def _print_progress(self) -> None:
        """Each new line of the demo's preparation progress (studies/demo.py `progress_lines`)."""
        assert self.demo_study is not None
        printed = self.__dict__.setdefault("_printed", set())
        for line in demo_setup.progress_lines(self.demo_study):
            if line not in printed:
                printed.add(line)
                self.stdout.write(line)

    def _start_background(self, name: str, args: list[str]) -> Background:
        """A Celery process with its log in var/<name>.log: the terminal gets one line, not its banner."""
        log_path = Path(settings.VAR_DIR) / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:  # the child keeps its own descriptor
            process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "ualign_web", *args],
                                       stdout=log, stderr=subprocess.STDOUT)
        self.stdout.write(f"{name.capitalize()}: started, log in {log_path}")
        return Background(name, process, log_path)

    def _start_worker(self) -> Background:
        return self._start_background("worker", ["worker", "-Q", "gpu,default", "--concurrency", "1",
                                                 "--loglevel", "INFO", "--hostname", "ualign@%h"])

    def _start_beat(self) -> Background:
        return self._start_background("beat", ["beat", "--loglevel", "INFO",
                                               "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME])

    def _wait(self, processes: list[Background]) -> None:
        # Stop the children on SIGTERM too (a supervisor or `timeout`), not only on Ctrl-C.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            ticks = 0
            while all(b.process.poll() is None for b in processes):
                time.sleep(0.5)
                ticks += 1
                if ticks % 4 == 0:
                    self._tick_demo()
            stopped = next(b for b in processes if b.process.poll() is not None)
            self.stderr.write(f"The {stopped.name} stopped (exit {stopped.process.returncode}); stopping the others.")
            if stopped.log_path is not None:
                self.stderr.write(f"Its last lines, from {stopped.log_path}:\n{stopped.tail()}")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping…")
        finally:
            for b in processes:
                if b.process.poll() is None:
                    b.process.send_signal(signal.SIGTERM)
            for b in processes:
                try:
                    b.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    b.process.kill()
