"""The OpenAI API key, read from Secrets Manager through Powertools Parameters.

The value is cached by Powertools for `max_age` seconds across invocations of a
warm container; `refresh()` forces a new read after OpenAI rejects the key, so a
rotated key is picked up without a cold start. The value is never logged and
never put in an error message.
"""

from __future__ import annotations

import json
import time

from lambda_chat.errors import SecretUnavailable, from_secret_read

JSON_KEY_FIELD = "OPENAI_API_KEY"


class SecretsManagerKey:
    """Reads the key from one secret, by name or ARN."""

    def __init__(self, secret_id: str, max_age_seconds: int) -> None:
        self._secret_id = secret_id
        self._max_age = max_age_seconds
        self._held: tuple[str, float] | None = None  # the last key read, and when (monotonic)

    def get(self) -> str:
        return self._read(force_fetch=False)

    def refresh(self) -> str:
        return self._read(force_fetch=True)

    def cached(self) -> str | None:
        """The key read within `max_age`, without a call (so async callers need no thread); else None."""
        if self._held is not None and time.monotonic() - self._held[1] < self._max_age:
            return self._held[0]
        return None

    def _read(self, *, force_fetch: bool) -> str:
        from aws_lambda_powertools.utilities.parameters import get_secret

        try:
            value = get_secret(self._secret_id, max_age=self._max_age, force_fetch=force_fetch)
        except Exception as exc:  # Powertools wraps every botocore failure in GetParameterError
            raise from_secret_read(exc) from None
        key = extract_key(value)
        if force_fetch or self.cached() != key:  # a new read, or its copy: it is as old as Powertools' copy
            self._held = (key, time.monotonic())
        return key


def extract_key(value: str | bytes) -> str:
    """The key from a secret holding either the bare key or JSON with an OPENAI_API_KEY field."""
    if isinstance(value, bytes):
        raise SecretUnavailable("the OpenAI API key secret is binary; store the key as SecretString")
    text = value.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            raise SecretUnavailable("the OpenAI API key secret looks like JSON but is not valid JSON") from None
        key = document.get(JSON_KEY_FIELD) if isinstance(document, dict) else None
        if not isinstance(key, str) or not key.strip():
            raise SecretUnavailable(f"the OpenAI API key secret is JSON without a non-empty {JSON_KEY_FIELD} field")
        return key.strip()
    if not text:
        raise SecretUnavailable("the OpenAI API key secret is empty; put the key in it")
    return text
