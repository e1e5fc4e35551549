"""The runner's pure decisions: clone URLs, revisions, session directories, environment,
arguments, auth, limits, the bubblewrap command line, and which runner gets a session."""

from __future__ import annotations

import base64

import pytest

from tether.protocol.runner_policy import (
    GIT_ALLOW_PROTOCOL,
    CloneSource,
    Limits,
    RunnerCandidate,
    RunnerPolicyError,
    agent_arguments,
    agent_environment,
    auth_entries,
    bwrap_argv,
    check_auth,
    check_clone_url,
    check_limits,
    check_revision,
    check_session_context,
    checkout_dir,
    claude_sandbox_settings,
    clone_argv,
    git_env,
    is_inside,
    mcp_arguments,
    parse_sources,
    pick_runner,
    rlimits,
    secret_fields,
    session_dir,
)

ROOTS = ("/srv/repos",)


@pytest.mark.parametrize("url", [
    "https://github.com/acme/app.git", "http://127.0.0.1:8080/app.git", "ssh://git@host/acme/app.git",
    "git://host/app.git", "git@github.com:acme/app.git", "host.example:acme/app.git",
])
def test_network_urls_are_cloned_as_given(url: str) -> None:
    source = check_clone_url(url)
    assert source == CloneSource(url) and not source.local


@pytest.mark.parametrize("url, why", [
    ("-uhack", "starts with '-'"),
    ("--upload-pack=touch /tmp/pwned", "starts with '-'"),
    ("ext::sh -c touch% /tmp/pwned", "remote helpers"),
    ("fd::17", "remote helpers"),
    ("ftp://host/app.git", "scheme 'ftp'"),
    ("https://-oProxyCommand=x/app", "no valid host"),
    ("ssh://-oProxyCommand=x/app", "no valid host"),
    ("-host:path", "starts with '-'"),
    ("relative/path", "not a repository URL"),
    ("", "empty"),
    (" https://host/x", "spaces"),
    ("https://host/x\n", "control characters"),
])
def test_dangerous_or_unknown_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(RunnerPolicyError, match=why):
        check_clone_url(url, local_roots=ROOTS)


def test_local_paths_only_under_allowed_roots() -> None:
    assert check_clone_url("/srv/repos/app.git", local_roots=ROOTS) == CloneSource("/srv/repos/app.git", local=True)
    assert check_clone_url("file:///srv/repos/x/../app.git", local_roots=ROOTS).url == "/srv/repos/app.git"
    with pytest.raises(RunnerPolicyError, match="outside"):
        check_clone_url("/srv/repos/../../etc", local_roots=ROOTS)
    with pytest.raises(RunnerPolicyError, match="outside"):
        check_clone_url("/srv/repos-evil/app.git", local_roots=ROOTS)  # a prefix is not a parent
    with pytest.raises(RunnerPolicyError, match="--allow-local"):
        check_clone_url("/srv/repos/app.git")
    with pytest.raises(RunnerPolicyError, match="local path"):
        check_clone_url("file://otherhost/srv/repos/app.git", local_roots=ROOTS)


@pytest.mark.parametrize("rev", ["main", "feature/x", "v1.2.3", "release-2024"])
def test_valid_revisions(rev: str) -> None:
    assert check_revision(rev) == rev


@pytest.mark.parametrize("rev", ["-b", "--upload-pack=x", "a..b", "a b", "x~1", "x^", "a:b", "x.lock", "x/",
                                 "/x", "a@{1}", "a\\b", "a//b", "@", ".hidden", "a/.b"])
def test_invalid_revisions(rev: str) -> None:
    with pytest.raises(RunnerPolicyError):
        check_revision(rev)


def test_parse_sources_both_shapes_and_names() -> None:
    sources = parse_sources([
        {"type": "git_repository", "url": "https://host/acme/app.git", "revision": "dev"},
        {"type": "github", "git_info": {"type": "github", "repo": "acme/lib", "ref": "main", "token": "ghs_x"}},
    ])
    assert sources == [CloneSource("https://host/acme/app.git", "dev"),
                       CloneSource("https://github.com/acme/lib.git", "main", token="ghs_x")]
    assert [s.name for s in sources] == ["app", "lib"]
    assert parse_sources(None) == []


@pytest.mark.parametrize("raw, why", [
    ("https://x", "must be a list"),
    ([{"type": "svn", "url": "https://x/y"}], r"sources\[0\]: unknown source type"),
    ([{"url": "https://x/y", "revision": "-x"}], "not a valid branch"),
    ([{"url": 7}], "must be a string"),
    ([{"url": "https://a/app.git"}, {"url": "https://b/app"}], "same name"),
    ([{"url": f"https://h/r{i}"} for i in range(11)], "At most 10"),
    (["https://x/y"], r"sources\[0\] must be an object"),
    ([{"url": "https://x/y"}, {"git_info": {"type": "github", "repo": ""}}], r"sources\[1\]: git_info.repo"),
    ([{"url": "https://x/y", "revision": 3}], "the revision must be a string"),
    ([{"git_info": {"repo": "https://x/y", "token": "a\nb"}}], "git_info.token must be a string"),
    ([{"git_info": {"repo": "https://x/y", "token": 7}}], "git_info.token must be a string"),
    ([{"url": "file://localhost"}], "must be an absolute path"),
])
def test_parse_sources_refusals(raw: object, why: str) -> None:
    with pytest.raises(RunnerPolicyError, match=why):
        parse_sources(raw, local_roots=ROOTS)


def test_session_dir_is_named_by_the_id_body_only() -> None:
    assert session_dir("/data/runner", "cse_01ABCDEF") == "/data/runner/sessions/01abcdef"
    assert session_dir("/data/runner/", "session_01abcdef") == "/data/runner/sessions/01abcdef"
    for bad in ("session_../../etc", "cse_", "x_a/b", "session_..", "cse_a\x00b"):
        with pytest.raises(RunnerPolicyError):
            session_dir("/data/runner", bad)
    with pytest.raises(RunnerPolicyError, match="absolute"):
        session_dir("data", "cse_01abcdef")


def test_checkout_layout_and_clone_argv() -> None:
    one = [CloneSource("https://h/app.git")]
    assert checkout_dir("/s", one) == ("/s/work", [(one[0], "/s/work")])
    two = [CloneSource("https://h/app.git"), CloneSource("/srv/repos/lib", local=True)]
    assert checkout_dir("/s", two)[1] == [(two[0], "/s/work/app"), (two[1], "/s/work/lib")]
    argv = clone_argv("git", CloneSource("https://h/app.git", "dev"), "/s/work")
    assert argv[-3:] == ["--", "https://h/app.git", "/s/work"]  # the URL can never be read as an option
    assert ["--depth", "1"] == argv[argv.index("--depth"):argv.index("--depth") + 2]
    assert argv[argv.index("--branch") + 1] == "dev"
    assert "--depth" not in clone_argv("git", two[1], "/d")  # local clones are full


def test_git_env_sends_the_token_as_a_header_not_in_the_url() -> None:
    env = git_env(CloneSource("https://h/app.git"), "tok")
    assert env["GIT_ALLOW_PROTOCOL"] == GIT_ALLOW_PROTOCOL and "ext" not in GIT_ALLOW_PROTOCOL
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"] == "Authorization: Basic " + base64.b64encode(b"x-access-token:tok").decode()
    assert "GIT_CONFIG_COUNT" not in git_env(CloneSource("/srv/repos/a", local=True), "tok")
    assert git_env(CloneSource("https://h/a", token="own"), "auth")["GIT_CONFIG_VALUE_0"].endswith(
        base64.b64encode(b"x-access-token:own").decode())


def test_agent_environment_keeps_plain_names_and_drops_protected_ones() -> None:
    env, warnings = agent_environment({"FOO": "1", "N": 2, "B": True, "HOME": "/", "LD_PRELOAD": "x.so",
                                       "TETHER_TOKEN": "t", "bad name": "x", "OBJ": {"a": 1}})
    assert env == {"FOO": "1", "N": "2", "B": "true"}
    assert len(warnings) == 5 and any("HOME" in w for w in warnings)
    assert agent_environment(None) == ({}, [])
    assert agent_environment(["x"])[1] == ["environment_variables is not an object; ignored."]


def test_agent_arguments_allow_list() -> None:
    args, warnings = agent_arguments({"model": "opus", "--append-system-prompt": "be brief",
                                      "allowedTools": ["Bash(ls)", "Read"], "permission-mode": "plan",
                                      "add-dir": "/", "sdk-url": "x", "verbose": True, "model2": None})
    assert args == ["--model", "opus", "--append-system-prompt", "be brief", "--allowedTools", "Bash(ls)",
                    "--allowedTools", "Read", "--permission-mode", "plan"]
    assert len(warnings) == 4  # add-dir, sdk-url, verbose, model2
    assert agent_arguments({"permission-mode": "yolo"})[0] == []


def test_agent_arguments_leave_out_false_and_null_and_refuse_what_is_not_a_value() -> None:
    assert agent_arguments({"model": False, "allowedTools": [None, "Read", False]}) == (["--allowedTools", "Read"], [])
    # every allowed flag takes a value: a bare --model would swallow the bridge's next argument
    args, warnings = agent_arguments({"model": True, "permission-mode": True})
    assert args == [] and warnings == ["claude_code_args: --model needs a value; ignored.",
                                       "claude_code_args: --permission-mode needs a value; ignored."]
    args, warnings = agent_arguments({"system-prompt": {"x": 1}, "append-system-prompt": "x" * 40_000,
                                      "model": "a\x00b"})
    assert args == [] and len(warnings) == 3 and all("not a short string" in w for w in warnings)
    assert agent_arguments(None) == ([], [])
    assert agent_arguments(["model"]) == ([], ["claude_code_args is not an object; ignored."])


def test_only_the_first_environment_variables_are_used() -> None:
    env, warnings = agent_environment({f"V{i}": str(i) for i in range(205)})
    assert len(env) == 200 and "V199" in env and "V200" not in env
    assert warnings == ["only the first 200 environment variables were used."]


def test_mcp_and_auth() -> None:
    assert mcp_arguments({"mcpServers": {}}, "claude", "/s/mcp.json") == (["--mcp-config", "/s/mcp.json"], None)
    args, warning = mcp_arguments({"mcpServers": {}}, "tether", "/s/mcp.json")
    assert args == [] and warning and "no MCP support" in warning
    assert mcp_arguments(None, "claude", "/x") == ([], None)
    env, git, warnings = auth_entries([{"type": "anthropic_api_key", "token": "sk"}, {"type": "github", "token": "g"},
                                       {"type": "weird", "token": "w"}, {"type": "git"}])
    assert env == {"ANTHROPIC_API_KEY": "sk"} and git == "g" and len(warnings) == 2
    assert mcp_arguments(["x"], "claude", "/x") == ([], "mcp_config is not an object; ignored.")
    assert auth_entries(None) == auth_entries([]) == ({}, None, [])
    assert auth_entries({"type": "git"}) == ({}, None, ["auth is not a list; ignored."])
    assert auth_entries(["tok", {"type": "git", "token": "a\x07b"}])[2] == [
        "auth[0] has no usable token; ignored.", "auth[1] has no usable token; ignored."]


def test_rlimits_only_what_is_set_and_available() -> None:
    limits = Limits(cpu_s=10, memory_mb=512, file_mb=5, wall_s=60)
    assert rlimits(limits, ["RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE"]) == [
        ("RLIMIT_CPU", 10), ("RLIMIT_AS", 512 << 20), ("RLIMIT_FSIZE", 5 << 20)]
    assert rlimits(limits, ["RLIMIT_CPU"]) == [("RLIMIT_CPU", 10)]  # an OS without the others
    assert rlimits(Limits(), ["RLIMIT_CPU", "RLIMIT_AS"]) == []
    assert "10 CPU s" in limits.describe() and Limits(wall_s=None).describe() == "none"
    with pytest.raises(RunnerPolicyError):
        check_limits(Limits(cpu_s=0))
    with pytest.raises(RunnerPolicyError, match="64 MB"):
        check_limits(Limits(memory_mb=10))
    assert check_limits(limits) is limits and check_limits(Limits()) == Limits()


def test_bwrap_argv() -> None:
    argv = bwrap_argv("/usr/bin/bwrap", ["agent", "-p"], writable=["/d/sessions/s1"], cwd="/d/sessions/s1/work",
                      hide=["/d", "/home/u/.tether", "/d/sessions/s1/work/x"])
    assert argv[0] == "/usr/bin/bwrap" and argv[-3:] == ["--", "agent", "-p"]
    joined = " ".join(argv)
    assert "--ro-bind / /" in joined and "--die-with-parent" in joined and "--unshare-pid" in joined
    # hidden directories come before the binds, so the session's own directory is bound back
    assert argv.index("/d") < argv.index("--bind")
    assert ["--tmpfs", "/home/u/.tether"] == argv[argv.index("/home/u/.tether") - 1:argv.index("/home/u/.tether") + 1]
    assert "/d/sessions/s1/work/x" not in argv  # never hide part of the session
    assert argv[argv.index("--chdir") + 1] == "/d/sessions/s1/work"
    assert "--tmpfs /tmp" not in joined and "--unshare-net" not in joined
    private = bwrap_argv("bwrap", ["x"], writable=["/w"], cwd="/w", private_tmp=True, share_network=False)
    assert "--tmpfs /tmp" in " ".join(private) and "--unshare-net" in private
    for bad in (dict(writable=["/"], cwd="/"), dict(writable=["rel"], cwd="rel"), dict(writable=["/a/../b"], cwd="/b"),
                dict(writable=["/w"], cwd="/elsewhere")):
        with pytest.raises(RunnerPolicyError):
            bwrap_argv("bwrap", ["x"], **bad)  # type: ignore[arg-type]


def test_claude_sandbox_settings_force_the_sandbox() -> None:
    import json

    assert json.loads(claude_sandbox_settings()) == {"sandbox": {"enabled": True, "allowUnsandboxedCommands": False,
                                                                 "failIfUnavailable": True}}


def test_is_inside() -> None:
    assert is_inside("/a", "/a") and is_inside("/a", "/a/b") and is_inside("/a/", "/a/b/../c")
    assert not is_inside("/a", "/ab") and not is_inside("/a", "/a/../b") and not is_inside("a", "a/b")


def test_server_side_shapes() -> None:
    check_session_context({"sources": [{"url": "x"}, {"git_info": {}}], "environment_variables": {"A": "b"},
                           "claude_code_args": {}, "mcp_config": {"mcpServers": {}}, "other": 1})
    for bad in ({"sources": "x"}, {"sources": [{"revision": "x"}]}, {"environment_variables": {"A": 1}},
                {"claude_code_args": []}, {"mcp_config": "x"}):
        with pytest.raises(RunnerPolicyError):
            check_session_context(bad)
    assert check_auth([{"type": "github", "token": "t", "extra": 1}]) == [{"type": "github", "token": "t"}]
    assert check_auth(None) == []
    for bad_auth in ([{"type": "x"}], [{"type": "x", "token": ""}], "x", [{}] * 11):
        with pytest.raises(RunnerPolicyError):
            check_auth(bad_auth)
    sources, extras = secret_fields({"sources": [{"url": "u"}], "environment_variables": {"A": "1"},
                                     "mcp_config": None, "title": "x"})
    assert sources == [{"url": "u"}] and extras == {"environment_variables": {"A": "1"}}
    assert secret_fields(None) == ([], {})


def test_pick_runner_prefers_free_room_and_needs_one_online() -> None:
    assert pick_runner([]) is None
    assert pick_runner([RunnerCandidate("env_a", False, 0, 4)]) is None
    cands = [RunnerCandidate("env_a", True, 3, 4), RunnerCandidate("env_b", True, 1, 4),
             RunnerCandidate("env_c", False, 0, 8)]
    assert pick_runner(cands) == "env_b"
    full = [RunnerCandidate("env_a", True, 4, 4), RunnerCandidate("env_b", True, 5, 4)]
    assert pick_runner(full) == "env_a"  # full runners still take work (they hold it)
    tie = [RunnerCandidate("env_a", True, 1, 4), RunnerCandidate("env_b", True, 1, 4)]
    assert pick_runner(tie) == "env_a"
