"""Every option of the wirewise locustfiles, typed, in one place: Locust's parser is built
from it and the bench builds its command lines from it, so the two cannot drift apart.

    opts = ScenarioOptions(transport="sse", rate=2.0)
    argv = opts.to_argv()          # ["--transport", "sse", "--rate", "2.0", ...]

Imports nothing of Locust, so the bench (which never loads a locustfile) can use it.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from wirewise.registry import TRANSPORTS

__all__ = ["ScenarioOptions", "add_arguments"]


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class ScenarioOptions:
    """A scenario's parameters beyond Locust's own (``-u``, ``-r``, ``--host``, ``-t``)."""

    transport: str = _opt("ws", "Transport the users speak", choices=TRANSPORTS)
    room_size: int = _opt(0, "Users per room (0: the scenario's default)")
    rate: float = _opt(0.0, "Messages per second per sender (0: the scenario's default)")
    payload_bytes: int = _opt(0, "Characters of message text (0: the scenario's default)")
    poll_interval: float = _opt(1.0, "Short polling interval, seconds")
    longpoll_wait: float = _opt(25.0, "Long poll hold, seconds")
    measure: float = _opt(10.0, "Seconds of the measurement window")
    drain: float = _opt(
        10.0, "Most seconds to wait after the window for its deliveries (less when all arrive)"
    )
    settle_quiet: float = _opt(
        0.5, "Seconds without a join or leave before the window opens (plus a poll interval)"
    )
    settle_cpu: float = _opt(
        25.0, "Server CPU percent (over 0.5 s) below which it has settled (needs --server-pid)"
    )
    settle_timeout: float = _opt(60.0, "Most seconds to wait for the server to settle")
    server_pid: int = _opt(0, "The server's pid, to watch its CPU (0: not watched)")
    total_users: int = _opt(
        0, "Users over every load generator (0: -u); a worker started alone never sees -u"
    )
    step_users: int = _opt(100, "idle: users added per step")
    step_seconds: float = _opt(5.0, "idle, saturate: seconds per step")
    steps: int = _opt(5, "idle, saturate: most steps")
    ramp_rate: float = _opt(150.0, "idle: connections opened per second while ramping")
    rate_factor: float = _opt(1.5, "saturate: rate multiplier per step")
    latency_bound_ms: float = _opt(100.0, "saturate: the p99 bound")
    knee_cpu: float = _opt(90.0, "saturate: server CPU percent that is the knee")
    generator_limit: float = _opt(
        70.0, "saturate: stop before a step whose predicted load-generator CPU exceeds this"
    )
    kill_at: float = _opt(0.6, "faults: when the bench kills the server, as a window fraction")
    slow_bytes: int = _opt(32000, "faults: characters of each message of the flood")
    slow_messages: int = _opt(600, "faults: messages of the flood")
    back_within: float = _opt(20.0, "faults: seconds to wait for every client to reconnect")
    fallback_order: str = _opt(
        "ws,sse,longpoll,poll", "fallback: the transports tried, in order (comma-separated)"
    )
    step_timeout: float = _opt(3.0, "fallback: seconds a transport may take to open")
    wirewise_out: str = _opt("", "Where the master writes the results JSON", web_ui=False)

    def to_argv(self) -> list[str]:
        """The command-line flags for every option that differs from its default."""
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                argv += [flag(f.name), str(value)]
        return argv

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_namespace(cls, namespace: Any) -> ScenarioOptions:
        """The options Locust parsed (its namespace holds Locust's own too)."""
        return cls(**{f.name: getattr(namespace, f.name) for f in fields(cls)})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: Any) -> None:
    """Add every option to Locust's parser (its ``add_argument`` knows ``include_in_web_ui``)."""
    for f in fields(ScenarioOptions):
        assert f.default is not MISSING
        kwargs: dict[str, Any] = {
            "type": type(f.default),
            "default": f.default,
            "help": f.metadata["help"],
        }
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if f.metadata.get("web_ui") is False:
            kwargs["include_in_web_ui"] = False
        parser.add_argument(flag(f.name), **kwargs)
