"""
Clients that place orders while the nemesis works, and the history of what
each attempt got.

Every order has a fresh ``Idempotency-Key``.  An attempt is:

``ok``
    a 200 with an order number: the order is acknowledged;
``failed``
    a definite refusal (a 4xx such as 409, no stock), or a connection
    refused before anything was sent: nothing may have been placed;
``unknown``
    a 5xx, a timeout or a connection lost mid-request: the order may or may
    not exist (a 503 "no majority" order can still commit later).

After an unknown outcome a buyer retries the same key at times, as a
careful client would, and now and then repeats a key that succeeded: both
must give the first reply again (exactly once).  With several front-ends,
the buyers are dealt out among them (buyer *b* uses front-end *b* mod *n*)
and each keeps to its own.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Sequence

import treq
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ConnectionRefusedError
from twisted.web.client import HTTPConnectionPool

from toystore.catalog.seed import TOYS
from toystore.testing import sleep

#: Seconds a buyer waits for an answer: more than the front-end's failover deadline (5 s).
TIMEOUT = 8.0


@dataclass
class Attempt:
    """One POST /orders and what it got."""

    key: str
    name: str
    quantity: int
    outcome: str  # "ok", "failed" or "unknown"
    number: int | None = None
    code: int | None = None
    error: str = ""
    started: float = 0.0
    ended: float = 0.0
    url: str = ""


class Buyers:
    """
    ``count`` concurrent buyers against the front-end at ``urls`` (one URL,
    or several that the buyers are dealt out among), driven by ``seed``.
    """

    def __init__(self, reactor: Any, urls: str | Sequence[str], seed: int, count: int = 4) -> None:
        self.reactor = reactor
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.seed = seed
        self.count = count
        self.attempts: list[Attempt] = []
        self.mismatches: list[str] = []  # a repeated key that got another reply
        self._stopping = False
        self._running: list[Deferred[None]] = []
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = count

    def start(self) -> None:
        self._running = [Deferred.fromCoroutine(self._buyer(b)) for b in range(self.count)]

    async def stop(self) -> None:
        """Let every buyer finish its request under way, then stop."""
        self._stopping = True
        await DeferredList(self._running)
        await self._pool.closeCachedConnections()

    async def _buyer(self, b: int) -> None:
        rng = random.Random(f"{self.seed}-{b}")
        url = self.urls[b % len(self.urls)]
        toys = sorted(TOYS)
        succeeded: list[Attempt] = []
        n = 0
        while not self._stopping:
            if succeeded and rng.random() < 0.05:
                earlier = rng.choice(succeeded)
                again = await self.attempt(earlier.key, earlier.name, earlier.quantity, url)
                if again.outcome == "ok" and again.number != earlier.number:
                    self.mismatches.append(f"{earlier.key}: {earlier.number} then {again.number}")
                continue
            n += 1
            key, name, quantity = f"s{self.seed}-b{b}-{n}", rng.choice(toys), rng.randint(1, 3)
            first = await self.attempt(key, name, quantity, url)
            if first.outcome == "unknown" and rng.random() < 0.5:
                await sleep(self.reactor, 0.2)
                second = await self.attempt(key, name, quantity, url)
                if first.number is not None and second.number not in (None, first.number):
                    self.mismatches.append(f"{key}: {first.number} then {second.number}")
                first = second
            if first.outcome == "ok":
                succeeded.append(first)
            else:
                await sleep(self.reactor, 0.05)  # do not spin while the store is down

    async def attempt(self, key: str, name: str, quantity: int, url: str | None = None) -> Attempt:
        """POST one order to the front-end at ``url`` (default: the first) and record what came back."""
        url = url or self.urls[0]
        attempt = Attempt(key, name, quantity, "unknown", started=self.reactor.seconds(), url=url)
        body = json.dumps({"name": name, "quantity": quantity}).encode()
        try:
            response = await treq.post(
                f"{url}/orders",
                data=body,
                headers={"Content-Type": "application/json", "Idempotency-Key": key},
                timeout=TIMEOUT,
                pool=self._pool,
            )
            attempt.code = response.code
            reply = json.loads(await response.content())
            if response.code == 200:
                attempt.outcome, attempt.number = "ok", reply["data"]["order_number"]
            elif 400 <= response.code < 500 and not _under_way(response.code, reply):
                attempt.outcome, attempt.error = "failed", reply["error"]["message"]
            else:
                attempt.error = reply.get("error", {}).get("message", "")
        except ConnectionRefusedError as e:
            attempt.outcome, attempt.error = "failed", str(e)
        except Exception as e:  # timed out, or the connection was lost: the outcome is unknown
            attempt.error = f"{type(e).__name__}: {e}"
        attempt.ended = self.reactor.seconds()
        self.attempts.append(attempt)
        return attempt


def _under_way(code: int, reply: dict[str, Any]) -> bool:
    """A 409 that says an earlier request with this key is still being placed: that one may succeed."""
    return code == 409 and "still being placed" in reply.get("error", {}).get("message", "")
