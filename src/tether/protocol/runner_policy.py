"""The runner's decisions, pure (docs/protocol.md §11.9): what a work secret's ``sources``,
``environment_variables``, ``claude_code_args``, ``mcp_config`` and ``auth`` may ask of the machine,
where a session's work directory is, which resource limits apply, and the bubblewrap command line.

Nothing here touches the file system or starts a process: the runner (``tether.bridge.workspace``)
resolves symlinks first and passes real paths in. Every refusal is a :class:`RunnerPolicyError`
whose message can go to the session as is.
"""

from __future__ import annotations

import base64
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = [
    "ALLOWED_AGENT_FLAGS",
    "GIT_ALLOW_PROTOCOL",
    "MAX_ARG_CHARS",
    "MAX_AUTH_ENTRIES",
    "MAX_CONTEXT_JSON",
    "MAX_ENV_VALUE_CHARS",
    "MAX_ENV_VARS",
    "MAX_SOURCES",
    "MAX_URL_CHARS",
    "NETWORK_SCHEMES",
    "PERMISSION_MODES",
    "PROTECTED_ENV",
    "RUNNER_CONTEXT_KEYS",
    "Checked",
    "CloneSource",
    "Limits",
    "RunnerCandidate",
    "RunnerPolicyError",
    "agent_arguments",
    "agent_environment",
    "auth_entries",
    "bwrap_argv",
    "check_auth",
    "check_clone_url",
    "check_limits",
    "check_revision",
    "check_session_context",
    "checkout_dir",
    "claude_sandbox_settings",
    "clone_argv",
    "git_env",
    "is_inside",
    "mcp_arguments",
    "parse_sources",
    "pick_runner",
    "rlimits",
    "secret_fields",
    "session_dir",
]

MAX_SOURCES: Final = 10
MAX_URL_CHARS: Final = 4096
MAX_ENV_VARS: Final = 200
MAX_ENV_VALUE_CHARS: Final = 32_768
MAX_ARG_CHARS: Final = 32_768
NETWORK_SCHEMES: Final = frozenset({"https", "http", "ssh", "git"})
"""Clone URLs may use these; ``file://`` and plain paths only under an allowed local root."""
GIT_ALLOW_PROTOCOL: Final = "file:git:http:https:ssh"
"""``GIT_ALLOW_PROTOCOL`` for every git the runner starts: no ``ext::``, no ``fd::``."""

_ENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_FLAG_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
_SCP_LIKE: Final = re.compile(r"^(?P<user>[A-Za-z0-9._-]+@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>[^/].*|/.*)$")
_SESSION_BODY: Final = re.compile(r"^[0-9A-Za-z]{4,64}$")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")

PROTECTED_ENV: Final = frozenset({
    # credentials of the session or of the machine: never handed in by a work secret
    "CLAUDE_CODE_SESSION_ACCESS_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CODE_WEBSOCKET_AUTH_FILE_DESCRIPTOR",
    "CLAUDE_SESSION_INGRESS_TOKEN_FILE", "TETHER_TOKEN", "TETHER_SERVER", "TETHER_HOME",
    # the runner sets these for the session; the loader ones would run code before the sandbox applies
    "HOME", "PWD", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONPATH", "PYTHONHOME", "NODE_OPTIONS",
})
ALLOWED_AGENT_FLAGS: Final = frozenset({
    # flags both the stock CLI and `tether agent` take; the bridge owns every other one
    "model", "system-prompt", "append-system-prompt", "permission-mode",
    "allowedTools", "allowed-tools", "disallowedTools", "disallowed-tools",
})
PERMISSION_MODES: Final = frozenset({"default", "acceptEdits", "bypassPermissions", "plan", "dontAsk"})


class RunnerPolicyError(ValueError):
    """A work secret asks for something the runner will not do; ``str(exc)`` says what and why."""


# ---- sources ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CloneSource:
    url: str
    """What ``git clone`` gets, after ``--``: a network URL, or an absolute local path."""
    revision: str | None = None
    local: bool = False
    token: str | None = None
    """A per-source token (``git_info.token``), sent as an HTTP header, never in the URL."""

    @property
    def name(self) -> str:
        """A directory name for this checkout (the repository's last path segment)."""
        tail = self.url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        tail = tail[:-4] if tail.endswith(".git") else tail
        safe = re.sub(r"[^A-Za-z0-9._-]", "-", tail).strip(".-")
        return safe[:100] or "repo"


def parse_sources(raw: object, *, local_roots: Sequence[str] = ()) -> list[CloneSource]:
    """The work secret's ``sources`` → checked clone sources.

    Two shapes are understood: Tether's and the S1 one, ``{type: "git_repository", url,
    revision?}``; and the reference's work-secret one, ``{type, git_info: {type: "github", repo:
    "owner/name", ref?, token?}}``. Anything else is refused, with the position in the list."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RunnerPolicyError("'sources' must be a list.")
    if len(raw) > MAX_SOURCES:
        raise RunnerPolicyError(f"At most {MAX_SOURCES} sources per session (got {len(raw)}).")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise RunnerPolicyError(f"sources[{i}] must be an object.")
        try:
            out.append(_one_source(item, local_roots))
        except RunnerPolicyError as exc:
            raise RunnerPolicyError(f"sources[{i}]: {exc}") from None
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise RunnerPolicyError("Two sources would be checked out under the same name.")
    return out


def _one_source(item: Mapping[str, Any], local_roots: Sequence[str]) -> CloneSource:
    info = item.get("git_info")
    url: object
    revision: object
    token: object
    if isinstance(info, dict):
        repo, ref, token = info.get("repo"), info.get("ref"), info.get("token")
        if not isinstance(repo, str) or not repo:
            raise RunnerPolicyError("git_info.repo must be a non-empty string.")
        if info.get("type") == "github" and re.fullmatch(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+", repo):
            repo = f"https://github.com/{repo}.git"
        url, revision = repo, ref
    else:
        if item.get("type") not in (None, "git_repository"):
            raise RunnerPolicyError(f"unknown source type {item.get('type')!r} (expected git_repository).")
        url, revision, token = item.get("url"), item.get("revision"), None
    if not isinstance(url, str):
        raise RunnerPolicyError("the repository URL must be a string.")
    if revision is not None and not isinstance(revision, str):
        raise RunnerPolicyError("the revision must be a string.")
    if token is not None and (not isinstance(token, str) or _CONTROL.search(token)):
        raise RunnerPolicyError("git_info.token must be a string without control characters.")
    source = check_clone_url(url, local_roots=local_roots)
    rev = check_revision(revision) if revision else None
    return CloneSource(source.url, rev, source.local, token or None)


def check_clone_url(url: str, *, local_roots: Sequence[str] = ()) -> CloneSource:
    """A URL git may clone: ``https``/``http``/``ssh``/``git`` URLs, scp-like ``user@host:path``,
    and ``file://`` URLs or absolute paths inside one of ``local_roots`` (already resolved, absolute).
    Refused: an empty URL, one that starts with ``-`` (git would read it as an option), control
    characters, ``transport::address`` helpers (``ext::`` runs commands), other schemes, relative
    paths, and local paths outside the roots."""
    if not url or len(url) > MAX_URL_CHARS:
        raise RunnerPolicyError("the repository URL is empty or too long.")
    if url != url.strip() or _CONTROL.search(url):
        raise RunnerPolicyError("the repository URL has spaces around it or control characters.")
    if url.startswith("-"):
        raise RunnerPolicyError(f"the repository URL {url!r} starts with '-' (it would be read as an option).")
    if "::" in url.split("/", 1)[0]:
        raise RunnerPolicyError("git remote helpers ('transport::address') are not allowed.")
    if url.startswith("/"):
        return CloneSource(_local_path(url, local_roots), local=True)
    if "://" in url:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise RunnerPolicyError("file:// URLs must name a local path.")
            return CloneSource(_local_path(parts.path, local_roots), local=True)
        if scheme not in NETWORK_SCHEMES:
            raise RunnerPolicyError(f"the scheme {scheme!r} is not allowed (use https, ssh, git or http).")
        host = parts.hostname or ""
        if not host or host.startswith("-"):
            raise RunnerPolicyError("the repository URL has no valid host.")
        return CloneSource(url)
    match = _SCP_LIKE.match(url)
    if match and not match.group("host").startswith("-"):
        return CloneSource(url)
    raise RunnerPolicyError(f"{url!r} is not a repository URL (use https://…, ssh://…, user@host:path, "
                            "or an absolute path the runner allows).")


def _local_path(path: str, local_roots: Sequence[str]) -> str:
    if not path.startswith("/"):
        raise RunnerPolicyError("a local repository must be an absolute path.")
    clean = posixpath.normpath(path)
    for root in local_roots:
        if is_inside(root, clean):
            return clean
    if not local_roots:
        raise RunnerPolicyError("this runner does not clone local paths (start it with --allow-local DIR).")
    raise RunnerPolicyError(f"{clean} is outside the directories this runner may clone from.")


def is_inside(root: str, path: str) -> bool:
    """``path`` is ``root`` or below it (both absolute; compared after normalising)."""
    root, path = posixpath.normpath(root), posixpath.normpath(path)
    return root.startswith("/") and (path == root or path.startswith(root.rstrip("/") + "/"))


def check_revision(revision: str) -> str:
    """A branch or tag name ``git clone --branch`` may take (``git check-ref-format`` rules, and
    never a leading ``-``)."""
    bad = (not revision or len(revision) > 255 or revision.startswith(("-", "/", ".")) or revision.endswith(
        ("/", ".", ".lock")) or ".." in revision or "@{" in revision or "//" in revision or revision == "@"
        or re.search(r"[\x00-\x20\x7f~^:?*\[\\]", revision) is not None or "/." in revision)
    if bad:
        raise RunnerPolicyError(f"{revision!r} is not a valid branch or tag name.")
    return revision


# ---- the session's directory ----------------------------------------------------------------------


def session_dir(root: str, session_id: str) -> str:
    """``<root>/sessions/<body>``: one directory per session, named by the id's body only, so no id
    (``session_…`` / ``cse_…`` / anything a server sends) can point elsewhere."""
    body = session_id.rsplit("_", 1)[-1]
    if not _SESSION_BODY.match(body):
        raise RunnerPolicyError(f"{session_id!r} is not a session id the runner can name a directory after.")
    if not root.startswith("/"):
        raise RunnerPolicyError("the runner's data directory must be absolute.")
    return posixpath.join(posixpath.normpath(root), "sessions", body.lower())


def checkout_dir(session: str, sources: Sequence[CloneSource]) -> tuple[str, list[tuple[CloneSource, str]]]:
    """(the agent's working directory, where each source is cloned). One source is the working
    directory itself; several go side by side under it, by name."""
    work = posixpath.join(session, "work")
    if len(sources) == 1:
        return work, [(sources[0], work)]
    return work, [(s, posixpath.join(work, s.name)) for s in sources]


def clone_argv(git: str, source: CloneSource, dest: str) -> list[str]:
    """``git clone``, shallow for network URLs, the URL after ``--`` (never an option)."""
    argv = [git, "-c", "core.hooksPath=/dev/null", "clone", "--quiet", "--no-recurse-submodules"]
    if not source.local:
        argv += ["--depth", "1"]
    if source.revision:
        argv += ["--branch", source.revision]
    return [*argv, "--", source.url, dest]


def git_env(source: CloneSource, auth_token: str | None = None) -> dict[str, str]:
    """Environment for one clone: no prompts, only the allowed transports, and a token (the
    source's own, else the secret's ``auth``) as an HTTP header through ``GIT_CONFIG_*``, so it
    appears neither in the URL nor on the command line."""
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": GIT_ALLOW_PROTOCOL, "GIT_CONFIG_NOSYSTEM": "1"}
    token = source.token or auth_token
    if token and not source.local:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                   GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")
    return env


# ---- environment, arguments, MCP, auth -------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """What was accepted, and one warning per part that was not (the session still starts)."""

    env: dict[str, str]
    args: list[str]
    warnings: list[str]


def agent_environment(raw: object) -> tuple[dict[str, str], list[str]]:
    """``environment_variables`` → (variables for the agent, warnings). Names must be shell names,
    values strings (numbers and booleans are turned into text); protected names are dropped."""
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, ["environment_variables is not an object; ignored."]
    env: dict[str, str] = {}
    warnings = []
    for name, value in list(raw.items())[:MAX_ENV_VARS]:
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            warnings.append(f"environment variable {str(name)[:40]!r} has an invalid name; ignored.")
        elif name in PROTECTED_ENV:
            warnings.append(f"environment variable {name} is set by the runner; ignored.")
        elif isinstance(value, bool):
            env[name] = "true" if value else "false"
        elif isinstance(value, (str, int, float)) and len(str(value)) <= MAX_ENV_VALUE_CHARS \
                and "\x00" not in str(value):
            env[name] = str(value)
        else:
            warnings.append(f"environment variable {name} has a value that is not a short string; ignored.")
    if len(raw) > MAX_ENV_VARS:
        warnings.append(f"only the first {MAX_ENV_VARS} environment variables were used.")
    return env, warnings


def agent_arguments(raw: object) -> tuple[list[str], list[str]]:
    """``claude_code_args`` (``{flag: value}``) → (extra agent arguments, warnings). Only flags in
    :data:`ALLOWED_AGENT_FLAGS`: the bridge owns the I/O and permission-prompt flags, and flags that
    reach outside the work directory (``--add-dir``) are not the secret's to give. ``false``/``null``
    leave a flag out, a list repeats it. Every allowed flag takes a value, so ``true`` (a bare flag)
    is refused: the CLI would take the next argument, one of the bridge's own, as its value."""
    if raw is None:
        return [], []
    if not isinstance(raw, dict):
        return [], ["claude_code_args is not an object; ignored."]
    args: list[str] = []
    warnings = []
    for key, value in raw.items():
        flag = key.lstrip("-") if isinstance(key, str) else ""
        if not _FLAG_NAME.match(flag) or flag not in ALLOWED_AGENT_FLAGS:
            warnings.append(f"claude_code_args: --{str(flag or key)[:40]} is not allowed on a runner; ignored.")
            continue
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is None or v is False:
                continue
            if v is True:
                warnings.append(f"claude_code_args: --{flag} needs a value; ignored.")
            elif isinstance(v, (str, int, float)) and len(str(v)) <= MAX_ARG_CHARS and "\x00" not in str(v):
                if flag == "permission-mode" and v not in PERMISSION_MODES:
                    warnings.append(f"claude_code_args: unknown permission mode {v!r}; ignored.")
                    continue
                args += [f"--{flag}", str(v)]
            else:
                warnings.append(f"claude_code_args: --{flag} has a value that is not a short string; ignored.")
    return args, warnings


def mcp_arguments(raw: object, agent_kind: str, path: str) -> tuple[list[str], str | None]:
    """(arguments, warning) for ``mcp_config``: the stock CLI reads it from a file (``--mcp-config``);
    ``tether agent`` has no MCP client, so there it is reported and left out."""
    if raw is None:
        return [], None
    if not isinstance(raw, dict):
        return [], "mcp_config is not an object; ignored."
    if agent_kind != "claude":
        return [], "mcp_config: this runner's agent has no MCP support; ignored."
    return ["--mcp-config", path], None


def auth_entries(raw: object) -> tuple[dict[str, str], str | None, list[str]]:
    """The secret's ``auth`` (``[{type, token}]``) → (agent environment, a git token, warnings).
    ``anthropic_api_key`` becomes ``ANTHROPIC_API_KEY``; ``git``/``github`` is the clone token."""
    if not raw:
        return {}, None, []
    if not isinstance(raw, list):
        return {}, None, ["auth is not a list; ignored."]
    env: dict[str, str] = {}
    git: str | None = None
    warnings = []
    for i, item in enumerate(raw):
        kind = item.get("type") if isinstance(item, dict) else None
        token = item.get("token") if isinstance(item, dict) else None
        if not isinstance(token, str) or not token or _CONTROL.search(token):
            warnings.append(f"auth[{i}] has no usable token; ignored.")
        elif kind == "anthropic_api_key":
            env["ANTHROPIC_API_KEY"] = token
        elif kind in ("git", "github"):
            git = token
        else:
            warnings.append(f"auth[{i}]: unknown type {kind!r}; ignored.")
    return env, git, warnings


# ---- limits ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    cpu_s: int | None = None
    """CPU seconds per process (``RLIMIT_CPU``: SIGXCPU, then SIGKILL)."""
    memory_mb: int | None = None
    """Address space per process (``RLIMIT_AS``). Node reserves a lot of it: leave this off for
    the stock ``claude`` unless it is generous (4096 MB and more)."""
    file_mb: int | None = None
    """Largest file a process may write (``RLIMIT_FSIZE``)."""
    wall_s: float | None = 3600.0
    """Wall-clock time per session; the runner stops the agent's whole process group after it."""

    def describe(self) -> str:
        parts = [f"{self.cpu_s} CPU s" if self.cpu_s else None,
                 f"{self.memory_mb} MB memory" if self.memory_mb else None,
                 f"{self.file_mb} MB files" if self.file_mb else None,
                 f"{self.wall_s:g} s wall clock" if self.wall_s else None]
        return ", ".join(p for p in parts if p) or "none"


def check_limits(limits: Limits) -> Limits:
    for name, value in (("CPU limit", limits.cpu_s), ("memory limit", limits.memory_mb),
                        ("file size limit", limits.file_mb), ("time limit", limits.wall_s)):
        if value is not None and value <= 0:
            raise RunnerPolicyError(f"the {name} must be positive (or left out for none).")
    if limits.memory_mb is not None and limits.memory_mb < 64:
        raise RunnerPolicyError("the memory limit must be at least 64 MB (no agent starts in less).")
    return limits


def rlimits(limits: Limits, available: Sequence[str]) -> list[tuple[str, int]]:
    """``(resource name, soft = hard value)`` to set in the agent's child before it runs, for the
    limits that are set and that this OS has (``available``: the ``RLIMIT_*`` names it knows)."""
    wanted = [("RLIMIT_CPU", limits.cpu_s),
              ("RLIMIT_AS", limits.memory_mb * 1024 * 1024 if limits.memory_mb else None),
              ("RLIMIT_FSIZE", limits.file_mb * 1024 * 1024 if limits.file_mb else None)]
    return [(name, int(value)) for name, value in wanted if value is not None and name in available]


# ---- bubblewrap -------------------------------------------------------------------------------------


def bwrap_argv(bwrap: str, command: Sequence[str], *, writable: Sequence[str], cwd: str,
               hide: Sequence[str] = (), private_tmp: bool = False, share_network: bool = True) -> list[str]:
    """A bubblewrap command line: the whole file system read-only with its own ``/dev`` and ``/proc``,
    the ``writable`` directories (the session's) bound read-write, ``hide`` directories replaced by
    empty tmpfs (the runner's own data), new PID/IPC/UTS namespaces, killed with its parent.
    ``private_tmp`` puts an empty writable tmpfs on ``/tmp`` (its files vanish with the sandbox);
    without it ``/tmp`` is read-only like the rest (a runner points ``TMPDIR`` into the session). The
    network stays shared unless ``share_network`` is False (the agent talks to its model API). Paths
    must be absolute and normalised; refused otherwise."""
    for path in (*writable, *hide, cwd):
        if not path.startswith("/") or posixpath.normpath(path) != path or path == "/":
            raise RunnerPolicyError(f"sandbox path {path!r} must be absolute, normalised and not '/'.")
    if not any(is_inside(w, cwd) for w in writable):
        raise RunnerPolicyError("the working directory must be inside a writable directory.")
    argv = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    if private_tmp:
        argv += ["--tmpfs", "/tmp"]
    if not share_network:
        argv.append("--unshare-net")
    for path in hide:  # before the binds: a writable directory inside a hidden one is bound back
        if not any(is_inside(w, path) for w in writable):  # never hide (part of) what the session needs
            argv += ["--tmpfs", path]
    for path in writable:
        argv += ["--bind", path, path]
    return [*argv, "--chdir", cwd, "--", *command]


def claude_sandbox_settings() -> str:
    """``--settings`` for the stock CLI with its own sandbox forced on (``--sandbox`` bridge): Bash
    runs sandboxed, may not fall back to running unsandboxed, and the CLI refuses to start when its
    sandbox cannot run (rather than running without it)."""
    return '{"sandbox":{"enabled":true,"allowUnsandboxedCommands":false,"failIfUnavailable":true}}'


# ---- the server's side: what S1 may carry for a runner, and which runner gets it --------------------

RUNNER_CONTEXT_KEYS: Final = ("environment_variables", "claude_code_args", "mcp_config")
MAX_CONTEXT_JSON: Final = 64 * 1024
MAX_AUTH_ENTRIES: Final = 10


def check_session_context(context: Mapping[str, Any]) -> None:
    """Shapes only (S1 ``session_context``): ``sources`` a list of at most :data:`MAX_SOURCES` objects
    with a string ``url`` or a ``git_info`` object; ``environment_variables`` an object of strings;
    ``claude_code_args`` and ``mcp_config`` objects. What a runner then accepts of them is its own
    decision (the functions above), reported to the session."""
    sources = context.get("sources")
    if sources is not None:
        if not isinstance(sources, list) or len(sources) > MAX_SOURCES:
            raise RunnerPolicyError(f"'session_context.sources' must be a list of at most {MAX_SOURCES} objects.")
        for i, item in enumerate(sources):
            ok = isinstance(item, dict) and (isinstance(item.get("url"), str) or isinstance(item.get("git_info"), dict))
            if not ok:
                raise RunnerPolicyError(f"'session_context.sources[{i}]' must be an object with a 'url' string "
                                        "(or a 'git_info' object).")
    env = context.get("environment_variables")
    if env is not None and (not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values())):
        raise RunnerPolicyError("'session_context.environment_variables' must be an object of strings.")
    for key in ("claude_code_args", "mcp_config"):
        if context.get(key) is not None and not isinstance(context.get(key), dict):
            raise RunnerPolicyError(f"'session_context.{key}' must be an object.")


def check_auth(raw: object) -> list[dict[str, str]]:
    """S1 ``auth``: ``[{type, token}]`` (at most :data:`MAX_AUTH_ENTRIES`), kept out of the session
    resource and handed to the runner in the work secret only."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_AUTH_ENTRIES:
        raise RunnerPolicyError(f"'auth' must be a list of at most {MAX_AUTH_ENTRIES} objects.")
    out = []
    for i, item in enumerate(raw):
        if not (isinstance(item, dict) and isinstance(item.get("type"), str) and isinstance(item.get("token"), str)
                and item["token"] and len(item["token"]) <= 8192 and len(item["type"]) <= 64):
            raise RunnerPolicyError(f"'auth[{i}]' must be {{\"type\": string, \"token\": non-empty string}}.")
        out.append({"type": item["type"], "token": item["token"]})
    return out


def secret_fields(context: Mapping[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(``sources``, the other runner fields) for a work secret, from the session's context."""
    context = context or {}
    sources = context.get("sources")
    extras = {k: context[k] for k in RUNNER_CONTEXT_KEYS if context.get(k) is not None}
    return (list(sources) if isinstance(sources, list) else []), extras


@dataclass(frozen=True)
class RunnerCandidate:
    environment_id: str
    online: bool
    active_sessions: int
    max_sessions: int


def pick_runner(candidates: Sequence[RunnerCandidate]) -> str | None:
    """The online runner with the most free room (ties: the first listed); a full one still takes
    work (it holds it until a session ends) when every online runner is full. None: none online."""
    online = [c for c in candidates if c.online]
    if not online:
        return None
    best = max(online, key=lambda c: (c.max_sessions - c.active_sessions, -online.index(c)))
    return best.environment_id
