"""``python -m batchclassify.server``: the local server with every ``ServerConfig`` knob a flag."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from .. import server
from .config import ServerConfig, flag_message
from .running import ListenError, check_port, serve_forever


def _port(text: str) -> int:
    try:
        port = int(text)
        check_port(port)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return port


def main(argv: list[str] | None = None) -> None:
    """``python -m batchclassify.server``: the server with every knob as a flag."""
    parser = argparse.ArgumentParser(
        prog="python -m batchclassify.server",
        description=server.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=9001, help="0 picks a free port")
    for option in fields(ServerConfig):  # one flag per knob, e.g. --rate-limit 20
        default = option.default
        special: dict[str, Callable[[str], Any]] = {"files_dir": Path, "api_key": str}
        kind = special.get(option.name) or (float if default is None else type(default))
        parser.add_argument(f"--{option.name.replace('_', '-')}", type=kind, default=default)
    args = parser.parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("host", "port")}
    try:
        config = ServerConfig(**options)
    except ValueError as error:
        parser.error(flag_message(error))
    try:
        serve_forever(config, host=args.host, port=args.port)
    except ListenError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main()
