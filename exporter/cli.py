"""The `tokenwatt` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import aiohttp

from exporter import __version__
from exporter.app import Daemon, serve_until_signalled
from exporter.config import DEFAULT_PORT, ConfigError, load_config, parse_duration
from exporter.demo import run_demo
from exporter.energy import EnergyReadError
from exporter.energy.select import open_source
from exporter.logs import configure_logging
from exporter.tokens.scraper import PageReading, ScrapeError, fetch_page, read_page

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenwatt",
        description="Prometheus exporter for the energy cost of LLM tokens: joules per token "
        "per model, per server, per GPU.",
    )
    parser.add_argument("--version", action="version", version=f"tokenwatt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the exporter daemon from a config file")
    run.add_argument("--config", required=True, type=Path, metavar="FILE", help="YAML config file")
    run.add_argument("--listen", metavar="HOST:PORT", help="override the config's listen address")
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="run on simulated GPUs and a simulated vLLM server (no GPU needed)")
    demo.add_argument(
        "--listen", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST:PORT", help="default: %(default)s"
    )
    demo.set_defaults(func=_cmd_demo)

    probe = sub.add_parser(
        "probe", help="read one metrics page, detect the server kind, print its token counters"
    )
    probe.add_argument("target", metavar="URL_OR_FILE", help="http(s) URL of a metrics page, or a file")
    probe.add_argument("--json", action="store_true", help="print JSON instead of a table")
    probe.add_argument("--timeout", default="10s", help="scrape timeout (default: %(default)s)")
    probe.set_defaults(func=_cmd_probe)

    check = sub.add_parser("check-config", help="validate a config file (exit 0 valid, 2 invalid)")
    check.add_argument("file", type=Path, metavar="FILE")
    check.set_defaults(func=_cmd_check_config)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        if args.listen:
            config = config.model_validate({**config.model_dump(), "listen": args.listen})
    except ConfigError as e:
        for problem in e.problems:
            print(f"tokenwatt: {args.config}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.logging.level, config.logging.format)

    async def run() -> int:
        try:
            source = await open_source(config.energy)
        except EnergyReadError as e:
            print(f"tokenwatt: energy source {config.energy.source}: {e}", file=sys.stderr)
            return EXIT_USAGE
        await serve_until_signalled(Daemon(config, source).run)
        return 0

    return asyncio.run(run())


def _cmd_demo(args: argparse.Namespace) -> int:
    configure_logging()
    asyncio.run(serve_until_signalled(lambda stop: run_demo(stop, args.listen)))
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        load_config(args.file)
    except ConfigError as e:
        for problem in e.problems:
            print(f"{args.file}: {problem}")
        return EXIT_USAGE
    print(f"{args.file}: valid")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    target: str = args.target
    try:
        if target.startswith(("http://", "https://")):
            text = asyncio.run(_fetch(target, parse_duration(args.timeout)))
        else:
            text = Path(target).read_text(encoding="utf-8")
        reading = read_page(text, "auto")
    except ScrapeError as e:
        print(f"tokenwatt probe: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"tokenwatt probe: {target}: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(_probe_json(reading) if args.json else _probe_table(reading))
    return 0


async def _fetch(url: str, timeout_s: float) -> str:
    async with aiohttp.ClientSession() as session:
        page = await fetch_page(session, url, timeout_s, max_bytes=64 * 1024 * 1024)
    return page.text


def _probe_json(reading: PageReading) -> str:
    return json.dumps(
        {"server_kind": reading.profile.kind, "models": [asdict(m) for m in reading.models]}, indent=2
    )


def _probe_table(reading: PageReading) -> str:
    header = ("model", "input_tokens", "cached_input", "output_tokens", "requests", "running")
    rows = [header] + [
        (
            m.model if m.model is not None else "(none)",
            _num(m.input_tokens),
            _num(m.cached_input_tokens),
            _num(m.output_tokens),
            _num(m.requests),
            _num(m.running),
        )
        for m in reading.models
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [f"server kind: {reading.profile.kind}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value == int(value) else f"{value:g}"


if __name__ == "__main__":
    sys.exit(main())
