"""`tether --remote "prompt"`: a new session on one of the organisation's runners, started with the
prompt, then attached in this terminal (docs/protocol.md §13: ``claude --remote``).

The source is ``--repo URL|PATH`` (``--branch B``), else the current directory's ``origin`` remote
and branch when it is a git checkout with one, else none (an empty work directory). A local PATH is
sent as its absolute path: the runner clones it only when it allows that directory (``tether runner
--allow-local``, ``tether server --runner-allow-local``). With ``--json``, or without a terminal, the
new session is printed as JSON instead of attached. Exit codes: 0; 1 when the server refuses or no
runner is online; 2 for bad arguments.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys
import uuid
from typing import Any

from rich.console import Console
from rich.markup import escape

from tether.bridge.startup import git_info
from tether.bridge.status import session_url
from tether.cli.sessions import Problem, _attach, _client, _explain
from tether.client.api import ApiClient, git_repository_source
from tether.errors import BridgeFatalError, TetherError
from tether.protocol.messages import user_message

err = Console(stderr=True, highlight=False, soft_wrap=True)


async def source_for(repo: str | None, branch: str | None, cwd: pathlib.Path) -> dict[str, Any] | None:
    """The ``session_context.sources`` entry for ``--repo``/``--branch`` (or this checkout)."""
    if repo is None:
        info = await git_info(cwd)
        if info.remote_url is None:
            if branch is not None:
                raise Problem("--branch needs --repo (this directory has no git remote 'origin').", 2)
            return None
        repo, branch = info.remote_url, branch or info.branch
    return git_repository_source(repo, branch)


def resolve_repo(repo: str | None) -> str | None:
    """A local directory becomes its absolute path; a URL stays as it is."""
    if repo is None:
        return None
    if os.path.isdir(os.path.expanduser(repo)):
        return os.path.realpath(os.path.expanduser(repo))
    if repo.startswith((".", "~")) or (os.sep in repo and "://" not in repo and ":" not in repo):
        raise Problem(f"--repo {repo}: no such directory (give a URL, or a path to a local repository).", 2)
    return repo


def run(prompt: str, repo: str | None, branch: str | None, title: str | None, as_json: bool,
        server: str | None) -> int:
    if not prompt.strip():
        err.print("[red]error:[/] --remote needs a prompt: tether --remote \"what to do\"")
        return 2
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not as_json

    async def main() -> int:
        source = await source_for(resolve_repo(repo), branch, pathlib.Path.cwd())
        async with _client(server) as api:
            try:
                session = await _create(api, prompt, source, title)
                if not interactive:
                    print(json.dumps({"id": session["id"], "url": session_url(api.server, session["id"]),
                                      "environment_id": session.get("environment_id"),
                                      "title": session.get("title"), "sources": [source] if source else []}),
                          flush=True)
                    return 0
                err.print(f"Session {session['id']} on runner {session.get('environment_id')}: "
                          f"{session_url(api.server, session['id'])}")
                return await _attach(api, str(session["id"]), False, True)
            except TetherError as exc:
                raise _explain_remote(exc, api) from None

    try:
        return asyncio.run(main())
    except Problem as problem:
        err.print(f"[red]error:[/] {escape(problem.message)}")
        return problem.code


async def _create(api: ApiClient, prompt: str, source: dict[str, Any] | None,
                  title: str | None) -> dict[str, Any]:
    context = {"sources": [source]} if source else {}
    return await api.create_session(environment_id=None, target="runner", title=title, source="remote",
                                    events=[user_message(prompt, str(uuid.uuid4()))], session_context=context)


def _explain_remote(exc: TetherError, api: ApiClient) -> Problem:
    if exc.error_type == "runner_unavailable":
        return Problem(exc.message.split(": ", 1)[-1])
    if isinstance(exc, BridgeFatalError) and exc.status == 400:
        return Problem(f"The server refused the session: {exc.message}", 2)
    return _explain(exc, api)
