"""The main job: migrate, make sure there is an admin, and run the web server and a Celery
worker together. Ctrl-C stops both."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from studies.management.commands.ensure_admin import ensure_admin


class Command(BaseCommand):
    help = "Run ualign: the web server and a Celery worker, on embedded defaults unless configured."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000", help="host:port for the web server")
        parser.add_argument("--no-worker", action="store_true", help="run the web server only")

    def handle(self, *args, addr: str, no_worker: bool, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write(f"Database: {settings.DATABASES['default']['NAME']}  broker: {settings.CELERY_BROKER_URL}")
        username, password = ensure_admin()
        processes = []
        if not no_worker:
            processes.append(self._start_worker())
        processes.append(subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload", addr]))
        self.stdout.write(self.style.SUCCESS(f"\nAdmin:    http://{addr}/admin/"))
        self.stdout.write(f"Login:    {username} / {password or '(set with manage.py changepassword)'}")
        self.stdout.write("Press Ctrl-C to stop the web server and the worker.\n")
        self._wait(processes)

    def _start_worker(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ualign_web", "worker", "-Q", "gpu,default",
             "--concurrency", "1", "--loglevel", "INFO", "--hostname", "ualign@%h"]
        )

    def _wait(self, processes: list[subprocess.Popen]) -> None:
        # Stop the children on SIGTERM too (a supervisor or `timeout`), not only on Ctrl-C.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            while all(p.poll() is None for p in processes):
                time.sleep(0.5)
            self.stderr.write("A process stopped; stopping the others.")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping…")
        finally:
            for p in processes:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in processes:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
