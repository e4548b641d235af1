"""Reconnecting a camera or stream that stops delivering: exponential backoff, a give-up time.

:class:`CameraSource` uses it for device indices and URLs (a file simply ends). The policy is
plain data (``live.source.reconnect`` in the live config); :class:`Backoff` is the state of one
outage: the delay before each attempt and whether it is time to give up.

    policy = ReconnectPolicy(initial_delay_s=0.5, max_delay_s=8.0, give_up_s=60.0)
    backoff = Backoff(policy, t_lost_ns=clock())
    while not backoff.expired(clock()):
        sleep(backoff.next_delay_s())       # 0.5, 1, 2, 4, 8, 8, ... s
        if reopen(): break
"""

from __future__ import annotations

from dataclasses import dataclass

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a camera or stream that stopped delivering frames is reopened.

    Args:
        enabled: reopen at all (False: the source ends with an error, as a file would).
        initial_delay_s: wait before the first attempt; doubled after each failed one ...
        max_delay_s: ... up to this.
        give_up_s: end the source with an error once no frame has come for this long,
            counted from the last frame; None: never give up.
    """

    enabled: bool = True
    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0
    give_up_s: float | None = 60.0

    def problems(self) -> list[tuple[str, str]]:
        """Impossible values as (field, why); empty when the policy is usable."""
        out = []
        if not self.initial_delay_s > 0:
            out.append(("initial_delay_s", "must be > 0 (seconds)"))
        if not self.max_delay_s >= self.initial_delay_s:
            out.append(("max_delay_s", "must be >= initial_delay_s"))
        if self.give_up_s is not None and not self.give_up_s > 0:
            out.append(("give_up_s", "must be > 0 (seconds), or null for never"))
        return out


class Backoff:
    """One outage: delays before successive attempts, and the give-up deadline.

    Args:
        policy: the delays and the give-up time.
        t_lost_ns: clock time of the last frame before the outage (the give-up time counts
            from it).
    """

    def __init__(self, policy: ReconnectPolicy, t_lost_ns: int) -> None:
        self.policy, self.t_lost_ns = policy, t_lost_ns
        self.attempts = 0

    def next_delay_s(self) -> float:
        """The wait before the next attempt (s); counts the attempt."""
        p = self.policy
        delay = min(p.initial_delay_s * 2.0 ** min(self.attempts, 60), p.max_delay_s)
        self.attempts += 1
        return delay

    def expired(self, now_ns: int) -> bool:
        """True once ``give_up_s`` has passed since the last frame."""
        give_up = self.policy.give_up_s
        return give_up is not None and now_ns - self.t_lost_ns >= give_up * NS_PER_S
