"""`WebhookReceiver`: a small endpoint for a provider's webhooks, ending waits as they arrive.

It runs its own aiohttp server (``await receiver.start()``, or `AsyncClient(push=receiver)`
does it), or is mounted into your aiohttp application::

    receiver = pollkit.WebhookReceiver(provider, serve=False)
    app.router.add_post("/hooks/pixy", receiver.handle)

Each POST is parsed by the provider (`Provider.parse_notification`: Pixy's whole item plus
``task_type``, Magic Hour's ``{type, payload}``) and published to the waits on that job. The
reply is 204 when understood, 202 for an event pollkit does not follow, 400 for a body that is
not the provider's webhook. Neither API signs its webhooks in a way pollkit checks, so keep the
endpoint on a private address (the default, 127.0.0.1) or behind your own authentication.
"""

from __future__ import annotations

import logging

from aiohttp import web

from pollkit.core import jsonbody
from pollkit.errors import ConfigurationError, PollkitError
from pollkit.http import Transport
from pollkit.notifications import Notifications
from pollkit.providers.base import Provider

__all__ = ["WebhookReceiver"]

_log = logging.getLogger("pollkit.push")


class WebhookReceiver:
    """A push source fed by a provider's webhooks.

    Args:
        provider: The API whose webhooks arrive (it parses them).
        host: Address to listen on when serving.
        port: Port to listen on (0: any free port; see `url`).
        path: The route webhooks are posted to.
        serve: False when you mount `handle` in an application of yours.

    Attributes:
        notifications: The hub waits subscribe to; live once started.
        received: Webhooks accepted so far.

    Raises:
        ConfigurationError: The path does not start with ``/`` or the port is out of range.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/pollkit/webhook",
        serve: bool = True,
    ) -> None:
        if not path.startswith("/"):
            raise ConfigurationError(f"webhook path must start with '/', got {path!r}")
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be between 0 and 65535, got {port!r}")
        self.provider = provider
        self.host, self.port, self.path = host, port, path
        self.serve = serve
        self.notifications = Notifications()
        self.received = 0
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        where = self.url if self._runner is not None else self.path
        return f"WebhookReceiver({type(self.provider).__name__}, {where!r})"

    @property
    def url(self) -> str:
        """Where to point the provider's webhooks (once started, when serving).

        Raises:
            ConfigurationError: Not serving yet.
        """
        if self._runner is None:
            raise ConfigurationError("the webhook receiver is not serving: await start() first")
        return f"http://{self.host}:{self.port}{self.path}"

    async def start(self, transport: Transport | None = None) -> None:
        """Start serving (unless mounted) and accept webhooks; a second call does nothing."""
        if self.serve and self._runner is None:
            app = web.Application()
            app.router.add_post(self.path, self.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            try:
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
            self._runner = runner
            self.port = runner.addresses[0][1]  # the bound port, when 0 asked for any
            _log.debug("webhook receiver listening on %s", self.url)
        self.notifications.set_live(True)

    async def aclose(self) -> None:
        """Stop serving."""
        self.notifications.set_live(False)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        """The aiohttp handler of the webhook route."""
        try:
            payload = jsonbody.loads(await request.read())
            notification = self.provider.parse_notification(payload)
        except (ValueError, PollkitError) as exc:
            _log.warning("webhook refused: %s", exc)
            return web.json_response({"error": str(exc)}, status=400)
        if notification is None:
            return web.Response(status=202)
        self.received += 1
        self.notifications.publish(notification)
        return web.Response(status=204)
