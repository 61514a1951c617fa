"""The `tokenwatt` command line.

Each command imports what it needs when it runs: `check-config`, and a `run` whose config is
refused, answer without loading the server, the HTTP client or the Kubernetes and gRPC libraries
(`tests/test_cli.py` checks it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from exporter import __version__
from exporter.config import DEFAULT_PORT, ConfigError, parse_duration, validate_listen
from exporter.config_file import load_config
from exporter.logs import clean, redact

if TYPE_CHECKING:
    from exporter.tokens.scraper import PageReading

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
    run.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="allow reloading the config with POST /-/reload (SIGHUP always reloads)",
    )
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

    replay = sub.add_parser(
        "replay", help="run the accounting offline over recorded energy and token traces (CSV)"
    )
    replay.add_argument(
        "--energy", required=True, type=Path, metavar="E.csv", help="columns timestamp,gpu,energy_joules"
    )
    replay.add_argument(
        "--tokens",
        required=True,
        type=Path,
        metavar="T.csv",
        help="columns timestamp,server,model,input_tokens,output_tokens "
        "[,cached_input_tokens,running,requests]",
    )
    replay.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="SERVER=GPU[,GPU...]",
        help="the GPUs (as in E.csv's gpu column) of a server; repeatable; default: every GPU",
    )
    replay.add_argument("--json", action="store_true", help="print JSON instead of a table")
    replay.set_defaults(func=_cmd_replay)
    return parser


def _cmd_replay(args: argparse.Namespace) -> int:
    from exporter import replay as traces

    try:
        mapping = traces.parse_map(args.map)
        energy = traces.read_energy(args.energy)
        tokens = traces.read_tokens(args.tokens)
        results = traces.replay_traces(energy, tokens, mapping, args.energy, args.tokens)
    except (traces.ReplayError, ValueError) as e:
        print(f"tokenwatt replay: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(traces.results_json(results) if args.json else traces.results_table(results))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        if args.listen:
            config = config.model_copy(update={"listen": validate_listen(args.listen)})
    except ConfigError as e:
        for problem in e.problems:
            _say(f"tokenwatt: {args.config}: {problem}")
        return EXIT_USAGE
    except ValueError as e:
        _say(f"tokenwatt: --listen: {e}")
        return EXIT_USAGE
    import asyncio

    from exporter.app import Daemon, serve_until_signalled
    from exporter.energy import EnergySourceUnavailable
    from exporter.energy.select import open_source
    from exporter.exposition.web_config import WebConfigError, load_web_config
    from exporter.kube.client import KubeConfigError
    from exporter.logs import configure_logging

    try:
        web = load_web_config(config.web_config_file) if config.web_config_file else None
    except WebConfigError as e:
        _say(f"tokenwatt: web_config_file: {e}")
        return EXIT_USAGE
    configure_logging(config.logging.level, config.logging.format)

    async def run() -> int:
        try:
            source = await open_source(config.energy)
        except EnergySourceUnavailable as e:
            for problem in e.problems:  # one line per source tried: "nvml: <what is missing, how to fix>"
                print(f"tokenwatt: energy source {problem}", file=sys.stderr)
            return EXIT_USAGE
        try:
            daemon = Daemon(
                config, source, web=web, config_path=args.config, enable_lifecycle=args.enable_lifecycle
            )
        except KubeConfigError as e:  # discovery cannot reach the API server without credentials
            print(f"tokenwatt: discovery.kubernetes: {e}", file=sys.stderr)
            await source.close()
            return EXIT_USAGE
        try:
            return await serve_until_signalled(daemon.run, daemon.reload)
        except OSError as e:  # the listen address is taken, not ours, or does not resolve
            _say(f"tokenwatt: listen: cannot listen on {config.listen}: {e.strerror or e}")
            return EXIT_USAGE

    return asyncio.run(run())


def _cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from exporter.app import serve_until_signalled
    from exporter.demo import run_demo
    from exporter.logs import configure_logging

    configure_logging()
    asyncio.run(serve_until_signalled(lambda stop: run_demo(stop, args.listen)))
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as e:
        for problem in e.problems:
            _say(f"{args.file}: {problem}", sys.stdout)
        return EXIT_USAGE
    if config.web_config_file is not None:
        from exporter.exposition.web_config import WebConfigError, load_web_config  # loads aiohttp

        try:
            load_web_config(config.web_config_file)
        except WebConfigError as e:
            _say(f"{args.file}: web_config_file: {e}", sys.stdout)
            return EXIT_USAGE
    print(f"{args.file}: valid")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    import asyncio

    from exporter.tokens.scraper import ScrapeError, read_page

    target: str = args.target
    try:
        if target.startswith(("http://", "https://")):
            source, reading = asyncio.run(_probe_url(target, parse_duration(args.timeout)))
        else:
            source, reading = target, read_page(Path(target).read_text(encoding="utf-8"), None)
    except ScrapeError as e:
        _say(f"tokenwatt probe: {e}")
        return 1
    except (OSError, ValueError) as e:
        _say(f"tokenwatt probe: {target}: {e}")
        return EXIT_USAGE
    print(_probe_json(reading) if args.json else _probe_table(reading, source))
    return 0


async def _probe_url(url: str, timeout_s: float) -> tuple[str, PageReading]:
    import aiohttp

    from exporter.tokens.scraper import probe

    async with aiohttp.ClientSession() as session:
        return await probe(session, url, timeout_s, max_bytes=64 * 1024 * 1024)


def _probe_json(reading: PageReading) -> str:
    models: list[dict[str, str | float | None]] = []
    for m in reading.models:
        entry: dict[str, str | float | None] = {
            "model": m.model,
            "input_tokens": m.input_tokens,
            "output_tokens": m.output_tokens,
            "requests": m.requests,
        }
        # Known only for some servers: absent rather than null where the server does not say.
        if m.cached_input_tokens is not None:
            entry["cached_input_tokens"] = m.cached_input_tokens
        if m.running is not None:
            entry["running"] = m.running
        models.append(entry)
    return json.dumps({"server_kind": reading.profile.kind, "models": models}, indent=2)


def _probe_table(reading: PageReading, source: str) -> str:
    header = ("model", "input_tokens", "cached_input", "output_tokens", "requests", "running")
    rows = [header] + [
        (
            clean(m.model) if m.model is not None else "(none)",
            _num(m.input_tokens),
            _num(m.cached_input_tokens),
            _num(m.output_tokens),
            _num(m.requests),
            _num(m.running),
        )
        for m in reading.models
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [f"server kind: {reading.profile.kind}", f"read from: {clean(source)}"]
    if not reading.models:
        lines.append("no token series yet: the server has not served a request since it started")
        return "\n".join(lines)
    lines.append(
        f"token counters move: input {reading.input_timing}, output {reading.output_timing} "
        "(see docs/servers.md)"
    )
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _say(text: str, stream: TextIO | None = None) -> None:
    """Print an error (to stderr by default): credentials in URLs redacted, each line cut short."""
    lines = redact(text).splitlines() or [""]
    print("\n".join(clean(line, 1000) for line in lines), file=stream or sys.stderr)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value == int(value) else f"{value:g}"


if __name__ == "__main__":
    sys.exit(main())
