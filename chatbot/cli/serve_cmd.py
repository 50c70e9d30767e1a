"""`chatbot serve`: the local engine as an OpenAI-compatible HTTP server (docs/scale-out.md)."""

from __future__ import annotations

import ipaddress
import socket
import sys

import typer

from chatbot.cli.app import app
from chatbot.cli.state import state_of
from chatbot.errors import UsageError, UserError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (another than loopback needs --api-key)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="CHATBOT_SERVE_API_KEY", show_envvar=False,
        help="Require 'Authorization: Bearer KEY' [env CHATBOT_SERVE_API_KEY].",
    ),
    queue: int = typer.Option(8, "--queue", min=0, max=10_000, help="Requests that may wait behind the running one; more get 429."),
) -> None:
    """Serve the personas as OpenAI-compatible models (/v1/models, /v1/chat/completions)."""
    if not is_loopback(host) and not api_key:
        raise UsageError(f"listening on {host} lets other machines in: give --api-key KEY (or bind 127.0.0.1)")
    check_port_free(host, port)
    import uvicorn

    from chatbot.serve.app import create_app

    state = state_of(ctx)
    runtime = state.runtime()
    server_app = create_app(runtime, state.settings, state.store, api_key=api_key, queue_size=queue)
    models = server_app.state.server.catalog.model_ids()
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {len(models)} models ({models[0] if models else 'none'}, ...) on http://{shown}:{port}/v1"
          + (" (API key required)" if api_key else ""), file=sys.stderr, flush=True)
    uvicorn.run(server_app, host=host, port=port, log_level="warning", access_log=False)
