"""Run the document library with uvicorn: `python -m examples.litestar_app [--port 8000]`."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time

import uvicorn

from .app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.litestar_app")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    app = create_app()
    # Bind first, so the address we print is the one serving (also with --port 0).
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)  # connections made before uvicorn is up wait instead of being refused
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"Document library running on http://{shown}:{port}/ (Ctrl+C to stop)", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C after a graceful shutdown
        print("Stopped.", flush=True)
    # obstore's async runtime can race interpreter shutdown right after network calls;
    # give its threads a moment before exiting.
    time.sleep(0.3)
    sys.exit(0 if server.started else 1)


if __name__ == "__main__":
    main()
