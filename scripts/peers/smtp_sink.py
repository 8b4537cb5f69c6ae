#!/usr/bin/env python3
"""SMTP sink for Outflow's tests: accepts every message and stores it as one file.

Usage:
    python scripts/peers/smtp_sink.py --host 127.0.0.1 --port 2525 --maildir DIR

Each message is written to ``DIR/<timestamp>-<counter>.eml`` holding the raw RFC 5322
bytes exactly as received in DATA (after SMTP dot-unstuffing, CRLF line ends kept). The
file is written under a hidden temporary name and renamed, so a reader that lists
``*.eml`` never sees a half-written message. Beside it, written (and renamed) *before*
the ``.eml``, ``DIR/<timestamp>-<counter>.envelope.json`` records what the message body
cannot show: ``mail_from``, ``rcpt_tos`` (Bcc recipients are only there), ``auth_user``
(null when the client did not authenticate), ``peer``, ``size`` and ``received_at``.
``<timestamp>`` is nanoseconds since the epoch, zero-padded, so names sort by arrival.

Behaviour a test can rely on:
- any sender and any recipient are accepted;
- AUTH PLAIN and AUTH LOGIN are offered without TLS and are optional; every user name
  is accepted with any password, except the user name ``bad``, which is always rejected
  with ``535 5.7.8 Authentication credentials invalid`` (to provoke an auth failure);
  the tests use user ``outflow``;
- 8BITMIME and SMTPUTF8 are offered; messages up to ``--max-size`` bytes (default
  64 MiB) are accepted, larger ones get ``552``; lines longer than 1000 octets get
  ``500`` (RFC 5321 4.5.3.1.6), as a real server would;
- no TLS (STARTTLS is not offered).

It needs the ``aiosmtpd`` package (scripts/services.sh installs it into its venv).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit(
        "smtp_sink.py needs aiosmtpd: run it with the venv python of scripts/services.sh "
        "(~/.cache/outflow/services/venv/bin/python) or `pip install aiosmtpd`"
    )

LOG = logging.getLogger("smtp_sink")

#: The one user name the authenticator refuses, so tests can provoke a 535.
REJECTED_USER = b"bad"


class MaildirHandler:
    """aiosmtpd handler writing every message to one file in ``maildir``."""

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        self.counter = itertools.count(1)
        # aiosmtpd runs handlers on one event loop thread, but a lock keeps the
        # counter and the rename order obviously consistent if that ever changes.
        self.lock = threading.Lock()

    def _write_atomically(self, name: str, data: bytes) -> None:
        tmp = self.maildir / f".tmp-{name}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.maildir / name)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd API)
        raw: bytes = envelope.original_content or b""
        with self.lock:
            stem = f"{time.time_ns():020d}-{next(self.counter):06d}"
            login = getattr(session, "auth_data", None)
            auth_user = None
            if isinstance(login, LoginPassword):
                auth_user = login.login.decode("utf-8", "replace")
            meta = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "auth_user": auth_user,
                "peer": list(session.peer) if session.peer else None,
                "size": len(raw),
                "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            try:
                # The envelope first: whoever sees the .eml can rely on its sidecar.
                self._write_atomically(f"{stem}.envelope.json", json.dumps(meta).encode())
                self._write_atomically(f"{stem}.eml", raw)
            except OSError as e:
                LOG.error("could not store message %s: %s", stem, e)
                return "451 4.3.0 Could not store the message"
        LOG.info(
            "stored %s.eml: %d bytes from %s to %s (auth user %s)",
            stem,
            len(raw),
            envelope.mail_from,
            ",".join(envelope.rcpt_tos),
            auth_user,
        )
        return "250 2.0.0 OK stored as " + stem


def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    """Accepts every user with any password except the user ``bad``."""
    if isinstance(auth_data, LoginPassword) and auth_data.login != REJECTED_USER:
        # auth_data is kept on the session, so the envelope sidecar can name the user.
        return AuthResult(success=True, auth_data=auth_data)
    return AuthResult(success=False, handled=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2525, help="port to bind (default 2525)")
    parser.add_argument("--maildir", required=True, type=Path, help="directory for the .eml files")
    parser.add_argument(
        "--max-size",
        type=int,
        default=64 * 1024 * 1024,
        help="largest message accepted, in bytes (default 64 MiB)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="log every SMTP command (aiosmtpd's own log)"
    )
    args = parser.parse_args()

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s smtp_sink %(levelname)s %(message)s"
    )
    # aiosmtpd logs each command at INFO (and a deprecation warning of its own on every
    # AUTH): only errors unless asked, so the log shows one line per stored message.
    logging.getLogger("mail.log").setLevel(logging.INFO if args.verbose else logging.ERROR)
    args.maildir.mkdir(parents=True, exist_ok=True)

    controller = Controller(
        MaildirHandler(args.maildir),
        hostname=args.host,
        port=args.port,
        data_size_limit=args.max_size,
        enable_SMTPUTF8=True,
        decode_data=False,
        authenticator=authenticator,
        auth_required=False,
        auth_require_tls=False,
        ready_timeout=10.0,
    )
    controller.start()
    print(f"LISTEN {args.host}:{args.port}", flush=True)
    LOG.info("storing messages in %s", args.maildir)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
