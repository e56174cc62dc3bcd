"""Kombu's filesystem transport, with a publish that a worker can never read half-written.

The embedded defaults (`make run` without REDIS_URL) send Celery's messages through kombu's
filesystem transport: one file per message in `var/broker/queue/`. Its publisher opens the
message's file under its final name and only then writes the message, and its consumer lists the
folder and reads whatever it finds, without the publisher's lock. A worker that polls between the
two reads an empty or partial file, and the JSON error that follows is "unrecoverable" to Celery:
the worker exits (kombu issue #1551 has the same traceback). On a busy machine beat's sweep
message lost that race often enough to stop `serve --demo`'s worker a few minutes after start.

Here the message is written under a name the consumer skips and renamed into place when complete:
`os.replace` in one folder is atomic, so a message file is either absent or whole. A message that
still can't be decoded (a disk that filled up, a file copied in by hand) is logged and dropped
rather than stopping the worker: its job row, not the message, is the state (see
`studies.tasks`), so the job shows as queued and the researcher can start it again.

Selected with Celery's `broker_transport` setting (settings.py), which kombu resolves as an
import path; the URL stays `filesystem://`.
"""

from __future__ import annotations

import logging
import os
import uuid
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

logger = logging.getLogger(__name__)

# The consumer takes files named "<anything>.<queue>.msg" (the part after the first dot); a name
# that starts with a dot never matches a queue, so a message being written is invisible.
_PARTIAL_PREFIX = ".partial-"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        """Write the message beside the queue under a hidden name, then rename it into the queue."""
        # The same name scheme as kombu's: milliseconds first, so the consumer's sort keeps order.
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, _PARTIAL_PREFIX + name)
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str) -> dict:
        """The next message; an undecodable file is logged and skipped (each try consumes one
        file, so this ends with a message or kombu's Empty)."""
        while True:
            try:
                return super()._get(queue)
            except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
                logger.error("Dropped an unreadable message file on queue %r: %s", queue, exc)


class Transport(filesystem.Transport):
    Channel = Channel

    @property
    def default_connection_params(self) -> dict:
        # Folders, not a host: without this kombu logs "No hostname was supplied. Reverting to
        # default 'localhost'" on every connection the web process opens to queue a job.
        return {}
