"""The ``wirewise`` command line. Each subcommand is a small function; ``main(argv)`` is testable."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Does this application really need WebSockets? Measure it.",
)


@app.callback()
def _root() -> None:
    """Does this application really need WebSockets? Measure it."""


def parse_settings(pairs: list[str], **given: object) -> object:
    """``Settings`` from ``--set name=value`` pairs plus explicit options (None = default)."""
    from servers.config import Settings

    known = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, object] = {k: v for k, v in given.items() if v is not None}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in known or name in ("allow_origins", "secret"):
            raise typer.BadParameter(
                f"--set takes name=value with name one of: {', '.join(sorted(set(known) - {'allow_origins', 'secret'}))}"
            )
        default = getattr(Settings(), name)
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("true", "false", "1", "0", "on", "off"):
                    raise ValueError(raw)
                values[name] = raw.lower() in ("true", "1", "on")
            else:
                values[name] = type(default)(raw)
        except ValueError:
            raise typer.BadParameter(
                f"{name} takes a {type(default).__name__}, not {raw!r}"
            ) from None
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def serve(
    transport: Annotated[str, typer.Argument(help="poll | longpoll | sse | h2 | ws | tcp")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port (0 picks a free one; the line printed says which).")
    ] = 8000,
    server: Annotated[
        str | None, typer.Option(help="uvicorn | hypercorn | websockets (default: by transport)")
    ] = None,
    tls: Annotated[
        bool, typer.Option(help="h2 over TLS with a generated self-signed certificate.")
    ] = False,
    certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM) for h2.")] = None,
    keyfile: Annotated[Path | None, typer.Option(help="TLS key (PEM) for h2.")] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            help="Token signing key (default: random per process).", envvar="WIREWISE_SECRET"
        ),
    ] = None,
    allow_origin: Annotated[
        list[str] | None, typer.Option(help="Extra browser origin to allow (repeatable).")
    ] = None,
    presence_timeout: Annotated[
        float | None, typer.Option(help="Seconds before a silent poller leaves.")
    ] = None,
    heartbeat: Annotated[float | None, typer.Option(help="Seconds between SSE heartbeats.")] = None,
    loop: Annotated[str, typer.Option(help="auto | uvloop | asyncio")] = "auto",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any limit as name=value (see servers/config.py)."),
    ] = None,
) -> None:
    """Serve the chat over one transport until Ctrl-C / SIGTERM."""
    from servers.serve import Plan, default_server
    from servers.serve import serve as run

    settings = parse_settings(
        set_ or [],
        secret=secret,
        allow_origins=tuple(allow_origin) if allow_origin else None,
        presence_timeout=presence_timeout,
        heartbeat=heartbeat,
    )
    plan = Plan(
        transport=transport,
        server=server or default_server(transport),
        host=host,
        port=port,
        tls=tls,
        certfile=certfile,
        keyfile=keyfile,
        loop=loop,
    )
    try:
        run(plan, settings)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    except OSError as exc:
        typer.echo(f"wirewise: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status instead of exiting (tests call it directly)."""
    try:
        app(args=argv if argv is not None else sys.argv[1:], prog_name="wirewise")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
