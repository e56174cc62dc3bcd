"""The embedded broker (kombu's filesystem transport, `make run` without REDIS_URL) never hands the
worker a half-written message, and a message it can't read does not stop the worker.

These drive real kombu channels on a temporary folder. The race they pin down stopped
`serve --demo`'s worker on busy machines (ualign_web/broker.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kombu import Connection
from kombu.transport.filesystem import Transport as KombuTransport
from kombu.transport.virtual import Empty

from ualign_web.broker import Transport as AtomicTransport

ROOT = Path(__file__).resolve().parent.parent


def _channel(folder: Path, transport: type):
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "store_processed": False,
               "control_folder": str(folder / "control")}
    connection = Connection("filesystem://", transport=transport, transport_options=options)
    return connection, connection.default_channel


def _poll_while_writing(monkeypatch, transport: type, folder: Path) -> list:
    """Publish one message while a consumer polls at the worst moment: the message's file exists
    on disk but its bytes are not written yet. Returns what the poll saw, then the message."""
    connection, producer = _channel(folder, transport)
    _, consumer = _channel(folder, transport)
    module = sys.modules[transport.Channel._put.__module__]
    encode = module.str_to_bytes
    seen: list = []

    def encode_then_poll(text):  # the transport encodes after creating the file, before writing it
        try:
            seen.append(consumer._get("default"))
        except Empty:
            seen.append("empty")
        return encode(text)

    monkeypatch.setattr(module, "str_to_bytes", encode_then_poll)
    producer._put("default", {"body": "a sweep", "n": 1})
    monkeypatch.setattr(module, "str_to_bytes", encode)
    seen.append(consumer._get("default"))
    connection.release()
    return seen


def test_kombus_own_publish_can_be_read_half_written(monkeypatch, tmp_path):
    """The bug, on kombu's own transport: a poll between create and write reads an empty file.
    When an upgrade of kombu makes this fail, its publish is atomic and ualign_web/broker.py's
    `_put` may go."""
    with pytest.raises(ValueError, match="Expecting value"):
        _poll_while_writing(monkeypatch, KombuTransport, tmp_path)


def test_a_message_being_written_is_invisible_until_complete(monkeypatch, tmp_path):
    seen = _poll_while_writing(monkeypatch, AtomicTransport, tmp_path)
    assert seen == ["empty", {"body": "a sweep", "n": 1}]
    assert [name for name in os.listdir(tmp_path) if name != "control"] == []


def test_an_unreadable_message_is_logged_and_skipped_not_fatal(tmp_path, caplog):
    connection, channel = _channel(tmp_path, AtomicTransport)
    (tmp_path / "1_broken.default.msg").write_bytes(b"")
    (tmp_path / "2_garbled.default.msg").write_bytes(b'{"body": ')
    channel._put("default", {"body": "next"})
    with caplog.at_level(logging.ERROR, logger="ualign_web.broker"):
        assert channel._get("default") == {"body": "next"}
        with pytest.raises(Empty):
            channel._get("default")
    assert len([r for r in caplog.records if "unreadable message" in r.getMessage()]) == 2
    connection.release()


def test_the_embedded_defaults_select_the_atomic_transport(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")}
    code = ("from ualign_web.celery import app; import django; django.setup(); "
            "c = app.connection_for_write(); print(c.transport_cls, type(c.transport).__module__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "UALIGN_VAR_DIR": str(tmp_path)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ualign_web.broker:Transport", "ualign_web.broker"]


def test_a_connection_to_the_embedded_broker_names_no_host_and_logs_no_warning(tmp_path):
    # `make run` printed kombu's "No hostname was supplied" each time the web process queued a job.
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")}
    code = ("import logging; logging.basicConfig(level=logging.WARNING); "
            "from ualign_web.celery import app; import django; django.setup(); "
            "c = app.connection_for_write(); print(c.info()['hostname'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "UALIGN_VAR_DIR": str(tmp_path)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "No hostname" not in out.stderr
    assert out.stdout.split()[-1] == "None"
