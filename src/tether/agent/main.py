"""Start ``tether agent``: choose the backend, wire stdin/stdout, run, return the exit code."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import traceback
from typing import Final

from tether import __version__
from tether.agent.backends.base import ModelBackend
from tether.agent.options import AgentOptions
from tether.agent.scenario import ScenarioError
from tether.agent.stdio import Output, OutputClosed, read_frames, stderr_line

EXIT_USAGE: Final = 2
VERSION: Final = f"{__version__} (Tether agent)"
BACKENDS: Final = ("anthropic", "scripted")


class UsageError(Exception):
    """Bad flags or files: reported on stderr, exit 2."""


def choose_backend(explicit: str | None, scenario_path: str | None) -> tuple[str, str | None]:
    """(backend name, a notice for stderr or None)."""
    if explicit is not None:
        if explicit not in BACKENDS:
            raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, got {explicit!r}")
        return explicit, None
    if scenario_path is not None:
        return "scripted", None
    if os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_BASE_URL"):
        return "anthropic", None
    return "scripted", ("using the offline scripted model backend (set ANTHROPIC_API_KEY or "
                        "ANTHROPIC_BASE_URL, or pass --backend anthropic, to use the Messages API)")


def make_backend(name: str, scenario_path: str | None, default_model: str | None) -> ModelBackend:
    if name == "scripted":
        from tether.agent.backends.scripted import ScriptedBackend

        text = None
        if scenario_path is not None:
            try:
                with open(scenario_path, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as exc:
                raise UsageError(f"cannot read the scenario {scenario_path}: {exc.strerror or exc}") from None
        try:
            return ScriptedBackend(text)
        except ScenarioError as exc:
            raise UsageError(f"scenario {scenario_path}: {exc}") from None
    if scenario_path is not None:
        raise UsageError("--scenario only goes with --backend scripted")
    from tether.agent.backends.anthropic_api import AnthropicBackend, BackendUnavailable

    try:
        return AnthropicBackend()
    except BackendUnavailable as exc:
        raise UsageError(str(exc)) from None


async def _main(opts: AgentOptions, backend: ModelBackend) -> int:
    from tether.agent.session import AgentSession
    from tether.agent.tools import default_tools

    session = AgentSession(opts, backend, default_tools(), Output(), VERSION)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, session.stop, 128 + signum)
    try:
        return await session.run(read_frames(sys.stdin.buffer, opts.max_line_bytes))
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)


def run_agent(opts: AgentOptions, backend_name: str | None, scenario_path: str | None,
              fast_exit: bool = False) -> int:
    """Run ``tether agent`` on this process's stdin/stdout; returns the exit code.

    ``fast_exit`` (the command line): once the session has ended and the streams are
    flushed, leave with ``os._exit`` instead of tearing the interpreter down, which
    takes about a second of CPU after the ``anthropic`` SDK was imported.
    """
    code = _run_agent(opts, backend_name, scenario_path)
    if fast_exit and code != EXIT_USAGE:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    return code


def _run_agent(opts: AgentOptions, backend_name: str | None, scenario_path: str | None) -> int:
    try:
        if not os.path.isdir(opts.cwd):
            raise UsageError(f"--cwd {opts.cwd} is not a directory")
        from tether.agent.session import build_policy

        try:
            build_policy(opts)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        name, notice = choose_backend(backend_name, scenario_path)
        backend = make_backend(name, scenario_path, opts.model)
    except UsageError as exc:
        stderr_line(f"error: {exc}")
        return EXIT_USAGE
    if notice:
        stderr_line(notice)
    try:
        return asyncio.run(_main(opts, backend))
    except Exception as exc:
        closed = isinstance(exc, BaseExceptionGroup) and exc.split(OutputClosed)[1] is None
        if closed or isinstance(exc, OutputClosed):
            stderr_line("error: stdout was closed; stopping")
        else:
            stderr_line(f"internal error: {exc!r}")
            if os.environ.get("TETHER_DEBUG"):
                traceback.print_exc()
        return 1
