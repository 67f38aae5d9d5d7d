"""`WebhookReceiver`: an endpoint for a provider's webhooks that can face the internet.

It runs its own aiohttp server (``await receiver.start()``, or `AsyncClient(push=receiver)`
does it), or is mounted into your aiohttp application at `WebhookReceiver.route`::

    receiver = pollkit.WebhookReceiver(provider, serve=False, path="/hooks/pixy")
    app.router.add_post(receiver.route, receiver.handle)

What it trusts, in order:

* **The path.** Each receiver has a secret (from `secrets`, or yours for a URL you registered
  in a vendor's dashboard) as the last segment of its path; `url` includes it. Neither Magic
  Hour nor Pixy signs its webhooks, so the URL is the only credential: serve it over TLS (a
  reverse proxy) so it is not seen on the way. A POST to any other path is answered 404 and
  counted (`refused`); the comparison takes the same time whatever the guess.
* **The API, not the payload.** By default a webhook is a hint: the wait on that job reads it
  from the API at once (with the key), and only that reply changes its state and its output
  URLs. A forged "completed" with URLs of someone's choosing ends no wait and downloads
  nothing. ``trust_payload=True`` takes the payload as the job's state, as a status reply:
  only for a source you authenticate yourself (a gateway that verifies a signature, a private
  network).
* **Bounds.** Only ``application/json``; a body over `max_body` bytes is refused (413) before
  it is parsed; a webhook about a job no wait of this client follows costs no request.

Replies: 204 when understood, 202 for an event pollkit does not follow, 400 for a body that is
not the provider's webhook, 404, 413 and 415 as above.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets

from aiohttp import web

from pollkit.core import jsonbody
from pollkit.errors import ConfigurationError, PollkitError
from pollkit.providers.base import Provider
from pollkit.push._hub import Notifications
from pollkit.transport._http import Transport

__all__ = ["DEFAULT_MAX_BODY", "WebhookReceiver"]

_log = logging.getLogger("pollkit.push")

#: Largest webhook body read by default, bytes (a Pixy item with its logs is a few KiB).
DEFAULT_MAX_BODY = 64 * 1024

# A secret is one URL path segment that needs no escaping; 16 characters of this alphabet is
# ~95 bits, the least a guessable-by-brute-force URL should have.
_SECRET = re.compile(r"[A-Za-z0-9_~.-]{16,256}")
_READ_SIZE = 16 * 1024


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class WebhookReceiver:
    """A push source fed by a provider's webhooks, at an unguessable URL.

    Args:
        provider: The API whose webhooks arrive (it parses them; its key reads the jobs).
        host: Address to listen on when serving.
        port: Port to listen on (0: any free port; see `url`).
        path: Where the route starts; the secret is the segment after it.
        serve: False when you mount `handle` at `route` in an application of yours.
        secret: The URL's secret segment (16–256 of ``A-Z a-z 0-9 - _ . ~``); None: a new
            random one (`secrets.token_urlsafe`), so register `url` after `start`.
        trust_payload: Take a webhook's payload as the job's state (only for a source you
            authenticate); False: a webhook makes the wait read the job from the API.
        max_body: Largest body accepted, bytes; a bigger one is answered 413 unread.
        public_url: The receiver's address as the vendor reaches it (your reverse proxy, e.g.
            ``https://hooks.example.com/pollkit/webhook``), used by `url` instead of the
            listening address; without the secret, which `url` appends.

    Attributes:
        notifications: The hub waits subscribe to; live once started.
        received: Webhooks accepted so far.
        refused: Requests refused for their path (a wrong or missing secret).

    Raises:
        ConfigurationError: The path does not start with ``/``, the port is out of range,
            the secret has the wrong length or characters, or `max_body` is not positive.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/pollkit/webhook",
        serve: bool = True,
        secret: str | None = None,
        trust_payload: bool = False,
        max_body: int = DEFAULT_MAX_BODY,
        public_url: str | None = None,
    ) -> None:
        if not path.startswith("/"):
            raise ConfigurationError(f"webhook path must start with '/', got {path!r}")
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be between 0 and 65535, got {port!r}")
        if secret is not None and not (isinstance(secret, str) and _SECRET.fullmatch(secret)):
            # The value itself is never echoed: it may be a real secret with one typo.
            raise ConfigurationError(
                "webhook secret must be 16-256 characters of A-Z a-z 0-9 - _ . ~"
            )
        if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body <= 0:
            raise ConfigurationError(f"max_body must be a positive number of bytes: {max_body!r}")
        if public_url is not None and not public_url.startswith(("https://", "http://")):
            raise ConfigurationError(f"public_url must be an http(s) URL, got {public_url!r}")
        self.provider = provider
        self.host, self.port, self.path = host, port, path.rstrip("/") or ""
        self.serve = serve
        self.trust_payload = trust_payload
        self.max_body = max_body
        self.public_url = public_url.rstrip("/") if public_url is not None else None
        self._secret = secret if secret is not None else secrets.token_urlsafe(32)
        self._secret_digest = _digest(self._secret)
        self.notifications = Notifications(trusted=trust_payload)
        self.received = 0
        self.refused = 0
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        # Never the secret: a repr ends up in logs and tracebacks.
        where = f"{self._base()}/…" if self._runner is not None else f"{self.path}/…"
        trust = ", trust_payload=True" if self.trust_payload else ""
        return f"WebhookReceiver({type(self.provider).__name__}, {where!r}{trust})"

    @property
    def secret(self) -> str:
        """The URL's secret segment (to register a mounted receiver's URL yourself)."""
        return self._secret

    @property
    def route(self) -> str:
        """The aiohttp route to mount `handle` at: `path` plus a ``{secret}`` segment, which
        `handle` compares with the secret."""
        return f"{self.path}/{{secret}}"

    @property
    def url(self) -> str:
        """Where to point the provider's webhooks, secret included (once started, when
        serving, or with `public_url`). Treat it as a credential.

        Raises:
            ConfigurationError: Not serving yet, and no `public_url`.
        """
        return f"{self._base()}/{self._secret}"

    def _base(self) -> str:
        if self.public_url is not None:
            return self.public_url
        if self._runner is None:
            raise ConfigurationError("the webhook receiver is not serving: await start() first")
        return f"http://{self.host}:{self.port}{self.path}"

    async def start(self, transport: Transport | None = None) -> None:
        """Start serving (unless mounted) and accept webhooks; a second call does nothing."""
        if self.serve and self._runner is None:
            app = web.Application()
            app.router.add_post(self.route, self.handle)
            app.router.add_route("*", "/{tail:.*}", self._elsewhere)
            runner = web.AppRunner(app, access_log=None)  # an access log would hold the secret
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            try:
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
            self._runner = runner
            self.port = runner.addresses[0][1]  # the bound port, when 0 asked for any
            where = f"http://{self.host}:{self.port}{self.path}/…"  # never the secret
            _log.debug("webhook receiver listening on %s", where)
        self.notifications.set_live(True)

    async def aclose(self) -> None:
        """Stop serving."""
        self.notifications.set_live(False)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _elsewhere(self, request: web.Request) -> web.Response:
        self.refused += 1
        return web.Response(status=404)

    def _secret_matches(self, request: web.Request) -> bool:
        given = request.match_info.get("secret")
        if given is None:  # mounted at a route of its own: the secret is the last segment
            given = request.path.rpartition("/")[2]
        # Digests of equal length, so the time taken says nothing of the secret's length either.
        return hmac.compare_digest(_digest(given), self._secret_digest)

    async def handle(self, request: web.Request) -> web.Response:
        """The aiohttp handler of the webhook route (mount it at `route`)."""
        if not self._secret_matches(request):
            self.refused += 1
            return web.Response(status=404)
        if request.content_type != "application/json":
            return web.json_response({"error": "expected application/json"}, status=415)
        length = request.content_length
        if length is not None and length > self.max_body:
            return self._too_large()
        body = bytearray()
        while chunk := await request.content.read(_READ_SIZE):  # a chunked body has no length
            body += chunk
            if len(body) > self.max_body:
                return self._too_large()
        try:
            notification = self.provider.parse_notification(jsonbody.loads(bytes(body)))
        except (ValueError, PollkitError) as exc:
            _log.warning("webhook refused: %s", exc)
            return web.json_response({"error": str(exc)}, status=400)
        if notification is None:
            return web.Response(status=202)
        self.received += 1
        self.notifications.publish(notification)
        return web.Response(status=204)

    def _too_large(self) -> web.Response:
        _log.warning("webhook refused: body over %d bytes", self.max_body)
        return web.json_response({"error": f"body over {self.max_body} bytes"}, status=413)
