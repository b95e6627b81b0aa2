"""
The simulated world: one clock, one queue of events, one network.

Everything that happens is an event on one heap, ordered by time and then by
the order it was scheduled in, and every choice (a delay, a drop, a fault)
is drawn from one ``random.Random`` seeded by the run's seed: so a seed
replays exactly.  A *step* is one event handled: a delivered message, a
fired timer, a write that became durable.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any, Callable, Hashable

Address = Hashable


@dataclass(frozen=True)
class Weather:
    """How the network behaves in one run (drawn from its seed)."""

    drop: float = 0.0
    duplicate: float = 0.0
    #: the chance of a long delay (which reorders messages)
    delay: float = 0.0
    latency: tuple[float, float] = (0.0002, 0.002)
    #: the most a long delay adds: up to seconds, as when TCP delivers, after many retransmissions,
    #: bytes of a connection whose sender has given up on it and asked again on another
    long_delay: float = 0.05

    @classmethod
    def draw(cls, rng: random.Random) -> Weather:
        calm = rng.random() < 0.3
        return cls(
            drop=0.0 if calm else rng.choice([0.0, 0.001, 0.01, 0.05]),
            duplicate=0.0 if calm else rng.choice([0.0, 0.001, 0.01]),
            delay=0.0 if calm else rng.choice([0.0, 0.01, 0.05]),
            long_delay=rng.choice([0.05, 0.05, 0.5, 3.0]),
        )


class World:
    """The clock, the event queue and the network of one simulated run."""

    def __init__(self, seed: int, weather: Weather | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.weather = weather if weather is not None else Weather.draw(self.rng)
        self.now = 0.0
        self.steps = 0
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = 0
        #: directed links that drop everything: (from, to) -> how many faults block it
        self.blocked: dict[tuple[Address, Address], int] = {}
        self.endpoints: dict[Address, Callable[[Address, Any], None]] = {}
        self.sent = 0
        self.dropped = 0

    # -- time ---------------------------------------------------------------------------------

    def at(self, when: float, action: Callable[..., None], *args: Any) -> None:
        """Run ``action(*args)`` at time ``when`` (not before now)."""
        self._order += 1
        heapq.heappush(self._queue, (max(when, self.now), self._order, action, args))

    def after(self, delay: float, action: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, action, *args)

    def step(self) -> bool:
        """Handle the next event; false when there is none."""
        if not self._queue:
            return False
        self.now, _, action, args = heapq.heappop(self._queue)
        self.steps += 1
        action(*args)
        return True

    def run_until(self, end: float, after_step: Callable[[], None] = lambda: None, max_steps: int | None = None) -> None:
        while self._queue and self._queue[0][0] <= end:
            if max_steps is not None and self.steps >= max_steps:
                return
            self.step()
            after_step()
        self.now = max(self.now, end)

    # -- the network ----------------------------------------------------------------------------

    def attach(self, address: Address, receive: Callable[[Address, Any], None]) -> None:
        self.endpoints[address] = receive

    def send(self, source: Address, to: Address, message: Any) -> None:
        """Send ``message``: it may be dropped, duplicated, delayed or reordered, as the weather says."""
        self.sent += 1
        if (source, to) in self.blocked or self.rng.random() < self.weather.drop:
            self.dropped += 1
            return
        copies = 2 if self.rng.random() < self.weather.duplicate else 1
        for _ in range(copies):
            delay = self.rng.uniform(*self.weather.latency)
            if self.rng.random() < self.weather.delay:
                delay += self.rng.uniform(0, self.weather.long_delay)
            self.after(delay, self._deliver, source, to, message)

    def _deliver(self, source: Address, to: Address, message: Any) -> None:
        if (source, to) in self.blocked:
            self.dropped += 1
            return
        self.endpoints[to](source, message)

    def block(self, links: list[tuple[Address, Address]]) -> None:
        for link in links:
            self.blocked[link] = self.blocked.get(link, 0) + 1

    def unblock(self, links: list[tuple[Address, Address]]) -> None:
        for link in links:
            self.blocked[link] -= 1
            if not self.blocked[link]:
                del self.blocked[link]
