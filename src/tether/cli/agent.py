"""`tether agent`: the worker child, speaking stream-json on stdin/stdout like the stock `claude -p`."""

from __future__ import annotations

import os
import pathlib

import typer


def _fail(message: str) -> None:
    typer.echo(f"tether agent: error: {message}", err=True)
    raise typer.Exit(2)


def agent(
    print_mode: bool = typer.Option(False, "-p", "--print", help="Non-interactive (always on; accepted for compatibility)."),
    input_format: str = typer.Option("stream-json", "--input-format", help="Only stream-json is supported."),
    output_format: str = typer.Option("stream-json", "--output-format", help="Only stream-json is supported."),
    verbose: bool = typer.Option(False, "--verbose", help="Required with stream-json output (as for the CLI)."),
    replay_user_messages: bool = typer.Option(False, "--replay-user-messages", help="Echo user messages (isReplay) when processed."),
    permission_prompt_tool: str | None = typer.Option(None, "--permission-prompt-tool", help="'stdio': ask with can_use_tool control requests."),
    include_partial_messages: bool = typer.Option(False, "--include-partial-messages", help="Also write stream_event lines."),
    permission_mode: str = typer.Option("default", "--permission-mode", help="default, acceptEdits, plan, bypassPermissions or dontAsk."),
    model: str | None = typer.Option(None, "--model", help="Model name or alias (sonnet, opus, haiku)."),
    cwd: pathlib.Path | None = typer.Option(None, "--cwd", help="Working directory (default: the current one)."),
    backend: str | None = typer.Option(None, "--backend", help="anthropic or scripted (default: anthropic when ANTHROPIC_API_KEY or ANTHROPIC_BASE_URL is set)."),
    scenario: pathlib.Path | None = typer.Option(None, "--scenario", help="Scenario file for the scripted backend (format: the docstring of tether/agent/scenario.py)."),
    session_id: str | None = typer.Option(None, "--session-id", help="Session id to report (default: a new UUID)."),
    system_prompt: str | None = typer.Option(None, "--system-prompt", help="Replace the system prompt."),
    append_system_prompt: str | None = typer.Option(None, "--append-system-prompt", help="Append to the system prompt."),
    allowed_tools: list[str] = typer.Option([], "--allowedTools", "--allowed-tools", help="Allow rules, e.g. 'Bash(git status)', 'Edit(src/**)'."),
    disallowed_tools: list[str] = typer.Option([], "--disallowedTools", "--disallowed-tools", help="Deny rules."),
    sdk_url: str | None = typer.Option(None, "--sdk-url", hidden=True),
    sandbox: bool = typer.Option(False, "--sandbox", help="Run Bash commands under bubblewrap: only the working "
                                                          "directory (and a private /tmp) is writable."),
) -> None:
    from tether.agent.main import run_agent
    from tether.agent.options import AgentOptions
    from tether.agent.permissions import MODES

    if input_format != "stream-json":
        _fail(f"--input-format {input_format} is not supported; use stream-json")
    if output_format != "stream-json":
        _fail(f"--output-format {output_format} is not supported; use stream-json")
    if sdk_url is not None:  # --sdk-url implies --verbose and permission prompts over the control protocol
        verbose = True
        permission_prompt_tool = permission_prompt_tool or "stdio"
    if not verbose:
        _fail("When using --print, --output-format=stream-json requires --verbose")
    if permission_prompt_tool not in (None, "stdio"):
        _fail(f"--permission-prompt-tool {permission_prompt_tool} is not supported; use stdio")
    if permission_mode not in MODES:
        _fail(f"--permission-mode must be one of {', '.join(sorted(MODES))}, got {permission_mode!r}")
    opts = AgentOptions(
        cwd=os.path.abspath(cwd if cwd is not None else os.getcwd()),
        model=model,
        permission_mode=permission_mode,
        prompt_tool=permission_prompt_tool == "stdio",
        replay_user_messages=replay_user_messages,
        include_partial_messages=include_partial_messages,
        session_id=session_id,
        system_prompt=system_prompt,
        append_system_prompt=append_system_prompt,
        allowed_tools=[r for v in allowed_tools for r in _split_rules(v)],
        disallowed_tools=[r for v in disallowed_tools for r in _split_rules(v)],
        emit_session_state=os.environ.get("CLAUDE_CODE_SDK_READS_SESSION_STATE", "") not in ("", "0", "false"),
    )
    if sandbox:
        import shutil

        opts.sandbox = shutil.which("bwrap")
        if opts.sandbox is None:
            _fail("--sandbox needs bubblewrap (`bwrap`) on PATH; install it (Debian: apt-get install bubblewrap)")
        if opts.cwd == "/":
            _fail("--sandbox cannot make '/' the writable working directory")
    scenario_path = str(scenario) if scenario is not None else None
    if sdk_url is not None:  # a session host and the agent loop in one process (docs/protocol.md §5)
        from tether.cli.sdk_url import run_sdk_url

        raise typer.Exit(run_sdk_url(opts, backend, scenario_path, sdk_url))
    code = run_agent(opts, backend, scenario_path, fast_exit=True)
    raise typer.Exit(code)


def _split_rules(value: str) -> list[str]:
    """`--allowedTools "Bash(git status),Read"`: commas outside parentheses separate rules."""
    out, depth, cur = [], 0, ""
    for ch in value:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch in ", " and depth == 0:
            if cur.strip():
                out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out
