"""Command line: ``conda-env-exporter [serve|report|demo] [--once] [options]``.

Flags are generated from :class:`exporter.config.Settings`; a flag given on the command line wins over
its ``CONDA_EXPORTER_*`` env var. Usage errors and missing roots print one line and exit 2.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from pydantic import ValidationError

from exporter import __version__
from exporter.config import ENV_PREFIX, Settings, flag_of, parse_listen_address
from exporter.discover.roots import Discovery, RootNotFoundError, detect_roots, validate_roots
from exporter.expose.page_model import DEFAULT_SORT, SORT_KEYS
from exporter.model import ScanOptions, Snapshot
from exporter.scan.walk import WALKER
from exporter.scan.workers import cancel_scans
from exporter.snapshot.full import full_scan
from exporter.snapshot.store import SnapshotStore

__all__ = ["main"]

log = logging.getLogger("exporter")

EXIT_USAGE = 2
STOP_TIMEOUT_SECONDS = 1.5  # SIGTERM must end the process within 2 s


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="conda-env-exporter",
        description="Prometheus exporter of the true, hardlink-aware disk usage of conda environments.",
        epilog="Every option can also be set by the env var shown with it; the flag wins.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("serve", "report", "demo"),
        default="serve",
        help="serve: HTTP /metrics (default); report: print a table and exit; "
        "demo: build a demo root in a temporary dir and serve it",
    )
    parser.add_argument("--once", action="store_true", help="scan, print the exposition to stdout and exit")
    report = parser.add_argument_group("report", "what the report command prints")
    report.add_argument(
        "--format", choices=("table", "json", "csv"), default="table",
        help="report as a table, JSON (envs, caches, owners, stale envs, roots) or CSV (one row per env)",
    )
    report.add_argument(
        "--sort", choices=tuple(SORT_KEYS), default=DEFAULT_SORT, metavar="KEY",
        help="order of the envs: " + "; ".join(f"{name}: {key.help}" for name, key in SORT_KEYS.items()),
    )
    report.add_argument(
        "--what-if-delete", nargs="+", metavar="ENV", default=None,
        help="report what deleting these envs (names or prefixes) and then running 'conda clean --packages' "
        "would free, and which package dirs that clean would remove",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (walker: {WALKER})")
    for name, info in Settings.model_fields.items():
        env_var = f"{ENV_PREFIX}{name.upper()}"
        help_text = f"{info.description} [env {env_var}]"
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if info.annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif name in ("roots", "envs"):
            kwargs.update(action="append", metavar="PATH")
        elif name == "web_listen_address":
            kwargs.update(action="append", metavar="ADDRESS")
        else:
            kwargs["metavar"] = name.rsplit("_", 1)[-1].upper()
        parser.add_argument(flag_of(name), **kwargs)
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    given = {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{flag_of(str(err['loc'][0])) if err['loc'] else 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise UsageError(problems) from None


def resolve_roots(settings: Settings) -> list[str]:
    """Roots asked for, else auto-detected ones; raises UsageError when there is none."""
    if settings.roots:
        try:
            return validate_roots(settings.roots)
        except RootNotFoundError as exc:
            raise UsageError(str(exc)) from None
    roots = detect_roots(os.environ, os.environ.get("HOME"))
    if roots:
        log.info("auto-detected conda root(s): %s", ", ".join(roots))
        return roots
    if settings.envs or settings.discover_environments_txt:
        return []  # single envs only
    raise UsageError(
        "no conda root found (looked at $CONDA_ROOT, $CONDA_PREFIX, $MAMBA_ROOT_PREFIX, $CONDA_EXE, "
        "~/miniconda3, ~/anaconda3, ~/miniforge3, ~/mambaforge, /opt/conda): pass --root PATH, "
        "or try 'conda-env-exporter demo'"
    )


def discovery_of(settings: Settings, roots: list[str]) -> Discovery:
    """What to discover; an ``--env`` that is not an env is a usage error."""
    for env in settings.envs:
        if not (env / "conda-meta").is_dir():
            raise UsageError(f"--env {str(env)!r} is not a conda environment: it has no conda-meta/ directory")
    return Discovery(tuple(roots), tuple(str(e) for e in settings.envs), settings.discover_environments_txt)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


def _scan(settings: Settings, roots: list[str]) -> SnapshotStore:
    # SIGTERM ends a one-shot scan as Ctrl-C does, through the pool's cleanup: killed outright, the exporter
    # would leave its worker processes blocked on their pipes for ever.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    store = SnapshotStore()
    options = ScanOptions.from_settings(settings)
    store.publish(full_scan(discovery_of(settings, roots).layouts(), options), "startup")
    return store


def _wait_for(stop: threading.Event) -> None:
    """Wait until a signal handler sets ``stop``. Not ``stop.wait()``: Python runs handlers in the main thread
    only, and a signal the kernel hands to another thread does not wake the main thread from a lock wait (a
    SIGINT was missed so, 1 in ~20 times); the wakeup fd is written whichever thread the signal hits."""
    receive, send = socket.socketpair()
    with receive, send:
        send.setblocking(False)
        previous = signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
        try:
            while not stop.is_set():  # (the handlers run before this test, at the loop's jump back)
                select.select([receive], [], [])
                receive.recv(4096)
        finally:
            signal.set_wakeup_fd(previous)


def serve(settings: Settings, roots: list[str], fixed_roots: bool = False) -> int:
    """Serve /metrics until SIGTERM or SIGINT.

    SIGHUP re-reads conda's configuration (``.condarc`` files, ``environments.txt``), auto-detects
    roots again unless they were given or ``fixed_roots``, and rescans. The exporter's own settings
    come from flags and env vars, which a running process cannot be given anew: change those with a
    restart."""
    # Imported here: --once and report need neither the daemon (inotify) nor the HTTP server, and start faster.
    from exporter.daemon.scheduler import Daemon, DaemonConfig
    from exporter.expose.app import make_app
    from exporter.expose.server import MetricsServer
    from exporter.expose.webconfig import WebConfigError
    from exporter.expose.webguard import WebConfigWatcher

    addresses = [parse_listen_address(a) for a in settings.web_listen_address]
    try:
        web = WebConfigWatcher(str(settings.web_config_file)) if settings.web_config_file else None
    except WebConfigError as exc:
        raise UsageError(f"{flag_of('web_config_file')}: {exc}") from None
    store = SnapshotStore()
    scheduler = Daemon(
        discovery_of(settings, roots),
        ScanOptions.from_settings(settings),
        DaemonConfig.from_settings(settings),
        store,
    )
    try:
        server = MetricsServer(make_app(store, settings.web_telemetry_path), addresses=addresses, web=web)
    except OSError as exc:
        raise UsageError(f"cannot listen on {' '.join(settings.web_listen_address)}: {exc.strerror}") from None
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=reload, name="reload", daemon=True).start()  # not in a signal handler

    def reload() -> None:
        try:
            fresh_roots = roots if fixed_roots else resolve_roots(settings)
            scheduler.reconfigure(discovery_of(settings, fresh_roots), ScanOptions.from_settings(settings))
        except UsageError as exc:
            log.error("SIGHUP: keeping the running configuration: %s", exc)
            return
        log.info("SIGHUP: rediscovering roots %s and rescanning", fresh_roots)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    server.start()
    address, path = " ".join(settings.web_listen_address), settings.web_telemetry_path
    scheme = "https" if web is not None and web.active.ssl_context is not None else "http"
    log.info("serving %s (%s) on %s, roots: %s, walker: %s", path, scheme, address, roots, WALKER)
    scheduler.start()
    _wait_for(stop)
    stop_by = time.monotonic() + STOP_TIMEOUT_SECONDS  # one deadline for every step, not a timeout each
    scheduler.request_stop()  # first: a scan cancelled below then reads as stopping, not as a failure
    server.stop()
    cancel_scans()  # a scan's worker processes would outlive the exporter, blocked on their pipes
    if not scheduler.stop(max(stop_by - time.monotonic(), 0.0)):
        # A scan in this process (one worker, or an incremental rescan) is still walking; its result is worthless now.
        log.info("abandoning the scan in progress")
        logging.shutdown()
        os._exit(0)
    return 0


def _report(args: argparse.Namespace, snapshot: Snapshot | None) -> str:
    # Imported here: --once and serve never render a report.
    from exporter.expose.report import (
        EnvNotFoundError,
        match_envs,
        render_report,
        render_what_if,
        report_csv,
        report_json,
    )

    assert snapshot is not None  # published by _scan
    if args.what_if_delete is None:
        render = {"json": report_json, "csv": report_csv, "table": render_report}[args.format]
        return render(snapshot, args.sort)
    try:
        envs = match_envs(snapshot, args.what_if_delete)
    except EnvNotFoundError as exc:
        raise UsageError(f"--what-if-delete: {exc}") from None
    return render_what_if(snapshot, envs, as_json=args.format == "json")


def _once(settings: Settings, roots: list[str]) -> str:
    # Imported here: report and serve do not print the exposition this way (prometheus_client's package
    # alone imports http.server, wsgiref and urllib.request).
    from prometheus_client import generate_latest

    from exporter.expose.exposition import build_registry

    return generate_latest(build_registry(_scan(settings, roots))).decode()


def _serve_demo(settings: Settings, announce: bool) -> int:
    """Build the demo root in a temporary directory and serve it until stopped."""
    # Imported here: only the demo builds a root, and in a temporary directory.
    import tempfile

    from exporter.demo import build_demo_root

    with tempfile.TemporaryDirectory(prefix="conda-env-exporter-demo-") as tmp:
        root = str(build_demo_root(Path(tmp) / "conda"))
        if announce:
            log.info("demo root built at %s", root)
        return serve(settings, [root], fixed_roots=True)


def run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)r",
        stream=sys.stderr,
    )
    if args.command == "demo":
        return _serve_demo(settings, announce=True)
    try:
        roots = resolve_roots(settings)
    except UsageError:
        if not (settings.demo_if_no_root and not settings.roots and args.command == "serve" and not args.once):
            raise
        log.warning("no conda root found; serving the built-in demo root instead")
        return _serve_demo(settings, announce=False)
    if args.once:
        sys.stdout.write(_once(settings, roots))
        return 0
    if args.command == "report":
        if args.what_if_delete is not None and args.format == "csv":
            raise UsageError("--format csv lists envs; --what-if-delete answers in a table or JSON")
        sys.stdout.write(_report(args, _scan(settings, roots).snapshot))
        return 0
    if args.what_if_delete is not None:
        raise UsageError("--what-if-delete goes with the report command")
    return serve(settings, roots)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``conda-env-exporter`` command.

    With ``argv`` None, main is the command itself, and the process ends when it returns: the objects made by
    the imports, then those left at the end, are frozen out of the garbage collector (:func:`gc.freeze`). Its
    full collections walk every tracked object, the interpreter's exit alone runs several, and they cost ~50 ms
    after ``--once`` (5% of it on a 300k-path tree) with no garbage to find."""
    if argv is None:
        gc.freeze()
    try:
        return run(argv)
    except UsageError as exc:
        print(f"conda-env-exporter: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    finally:
        if argv is None:
            gc.freeze()
