"""An OpenAI-compatible chat client for the optional ``llm`` generator.

The endpoint comes from the environment only, never from params, logs or dvc.lock:
``RARFT_LLM_BASE_URL`` (e.g. ``http://127.0.0.1:8000/v1``), ``RARFT_LLM_MODEL``,
``RARFT_LLM_API_KEY`` (optional), ``RARFT_LLM_CACHE`` (cache folder, default
``.cache/rarft-llm``). Replies are cached on disk under the SHA-256 of the request
(URL path, model, messages, temperature; not the key), so a rerun is free and gives
the same records. Every reply is validated by :class:`LlmRefusal`; any failure
raises :class:`LLMError` with a short reason key, and the caller quarantines it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.core.io import write_text
from pipeline.riq.schema import CATEGORIES, Category

SYSTEM = (
    "You write hard-irrelevant queries for video temporal grounding: a query that changes a few facts of a true "
    "query so that the video no longer contains it. Reply with one JSON object only: "
    '{"query": str, "explanation": str, "categories": [str, ...]}. '
    f"categories: the kinds of facts you changed, from: {', '.join(CATEGORIES)}. "
    "explanation: one sentence starting 'No segment is relevant:' saying what the video shows instead."
)


class LLMError(RuntimeError):
    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


class LlmRefusal(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str = Field(min_length=3, max_length=400)
    explanation: str = Field(min_length=10, max_length=1000)
    categories: list[Category] = Field(min_length=1, max_length=3)

    @field_validator("query", "explanation")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = " ".join(v.split())
        if not v:
            raise ValueError("empty")
        return v


@dataclass
class LLMClient:
    base_url: str
    model: str
    api_key: str | None = None
    cache_dir: Path = Path(".cache/rarft-llm")
    timeout: float = 60.0
    temperature: float = 0.0

    @classmethod
    def from_env(cls, env: dict | None = None) -> LLMClient | None:
        """The client configured by RARFT_LLM_* variables, or None when no endpoint is set."""
        env = os.environ if env is None else env
        if not env.get("RARFT_LLM_BASE_URL") or not env.get("RARFT_LLM_MODEL"):
            return None
        return cls(
            env["RARFT_LLM_BASE_URL"].rstrip("/"), env["RARFT_LLM_MODEL"], env.get("RARFT_LLM_API_KEY") or None,
            Path(env.get("RARFT_LLM_CACHE", ".cache/rarft-llm")), float(env.get("RARFT_LLM_TIMEOUT", "60")),
        )

    def _request(self, messages: list[dict]) -> tuple[str, dict]:
        body = {"model": self.model, "messages": messages, "temperature": self.temperature}
        key = hashlib.sha256(json.dumps({"url": self.base_url, **body}, sort_keys=True).encode()).hexdigest()
        return key, body

    def chat(self, messages: list[dict]) -> str:
        """The assistant text of one chat completion (cached)."""
        key, body = self._request(messages)
        cached = self.cache_dir / f"{key}.json"
        if cached.is_file():
            return json.loads(cached.read_text(encoding="utf-8"))["content"]
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions", json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise LLMError("http_error", f"HTTP {exc.code} from the endpoint") from None
        except (TimeoutError, socket.timeout):
            raise LLMError("timeout", f"no reply within {self.timeout} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise LLMError("timeout", f"no reply within {self.timeout} s") from None
            raise LLMError("unreachable", str(exc.reason)) from None
        except (http.client.HTTPException, ConnectionError) as exc:
            raise LLMError("unreachable", f"connection failed ({type(exc).__name__})") from None
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError("bad_response", "not an OpenAI chat completion") from None
        # Only well-formed completions are cached: a transient failure is retried on the next run.
        write_text(cached, json.dumps({"request": body, "content": content}, ensure_ascii=False))
        return content


def parse_refusal(content: str) -> LlmRefusal:
    """The reply's JSON object (a ```json fence around it is tolerated), validated."""
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        return LlmRefusal.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "<reply>"
        raise LLMError("invalid_reply", f"{where}: {err['msg']}") from None
