"""The `llmproxy` command line.

Each subcommand lives in its own module with a `register(subparsers)` function that adds its parser
and sets `func`; heavy imports happen inside the command, so `llmproxy --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# module name -> registers these subcommands
_COMMANDS = (
    "up",
    "status",
    "export",
    "tail",
    "bench",
    "keys",
    "attacks",
    "audit",
    "seed",
    "policy",
    "token",
    "experiments",
    "simulate",
    "retention",
)
_EVAL_COMMANDS = ("eval_patterns", "eval_security")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmproxy", description="Intelligent LLM egress gateway (Envoy + Python ext_proc).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        _register(f"extproc.cli.{name}", sub)
    eval_parser = sub.add_parser("eval", help="offline evaluation commands")
    eval_sub = eval_parser.add_subparsers(dest="eval_command", metavar="WHAT")
    for name in _EVAL_COMMANDS:
        _register(f"extproc.cli.{name}", eval_sub)
    return parser


def _register(module: str, sub: argparse._SubParsersAction) -> None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:  # command not built yet
            return
        raise
    mod.register(sub)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        raise SystemExit(2)
    raise SystemExit(func(args) or 0)
