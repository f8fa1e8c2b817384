"""E-mail through a configurable SMTP server (the standard library's smtplib, in a thread)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage

from api.jobs.config import JobsSettings
from api.jobs.errors import NotifyError


class Mailer:
    """Sends plain-text mail; SMTP and TLS settings come from JobsSettings."""

    def __init__(self, settings: JobsSettings) -> None:
        self._s = settings

    def _send_sync(self, msg: EmailMessage) -> None:
        s = self._s
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s) as smtp:
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password)
            smtp.send_message(msg)

    async def send(self, to: Sequence[str], subject: str, body: str) -> None:
        """Send one message to `to`; raises NotifyError when the server refuses or is away."""
        if not to:
            return
        msg = EmailMessage()
        msg["From"] = self._s.smtp_from
        msg["To"] = ", ".join(sorted(set(to)))
        msg["Subject"] = subject
        msg.set_content(body)
        try:
            await asyncio.to_thread(self._send_sync, msg)
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"cannot send mail via {self._s.smtp_host}:{self._s.smtp_port}:"
                              f" {exc}") from exc
