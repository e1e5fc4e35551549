"""The local/remote mode machine of `tether claude` (tether.protocol.claude_handoff): what each
event does in each state."""

from __future__ import annotations

from typing import Any

from tether.protocol.claude_handoff import (
    Deliver,
    Dropped,
    EndAgentInput,
    EndTui,
    Exit,
    HandOff,
    InterruptAgent,
    InterruptTui,
    StartHost,
    StartTui,
)


def prompt(text: str) -> dict[str, Any]:
    return {"type": "user", "uuid": f"u-{text}", "message": {"role": "user", "content": text}}


def remote() -> HandOff:
    """A machine that handed off once, without prompts (Take over)."""
    h = HandOff()
    assert h.take_over() == ([EndTui()], None)
    assert h.tui_exited(143) == [StartHost()]
    assert h.host_started() == []
    assert h.mode == "remote"
    return h


def test_a_client_prompt_at_an_idle_terminal_hands_off_and_is_delivered_once_the_host_runs() -> None:
    h = HandOff()
    assert h.status().state == "local" and h.status().detail == "At the terminal"
    p1, p2 = prompt("one"), prompt("two")
    assert h.client_prompt(p1) == [EndTui()]
    assert h.mode == "handing_off"
    assert h.client_prompt(p2) == []  # queued
    assert h.status().queued == 2
    assert h.tui_exited(143) == [StartHost()]
    assert h.host_started() == [Deliver(p1), Deliver(p2)]
    assert h.mode == "remote" and h.remote_turn
    assert h.client_prompt(prompt("three")) == [Deliver(prompt("three"))]


def test_a_hand_off_waits_for_the_turn_running_at_the_terminal() -> None:
    h = HandOff()
    h.local_turn_changed(True)
    h.permission_at_terminal("Bash")
    assert h.status().waiting_tool == "Bash"
    assert "needs permission" in h.status().detail
    assert h.client_prompt(prompt("x")) == []
    assert h.mode == "handing_off" and "after the turn" in h.status().detail
    assert h.local_turn_changed(False) == [EndTui()]
    assert h.status().waiting_tool is None


def test_take_over_in_each_state() -> None:
    h = HandOff()
    assert h.take_over() == ([EndTui()], None)
    assert h.take_over() == ([], None)  # already handing off
    h = remote()
    assert h.take_over() == ([], None)
    h.return_to_terminal()
    actions, error = h.take_over()
    assert actions == [] and error is not None


def test_return_when_idle_ends_the_agents_input_then_restarts_the_tui() -> None:
    h = remote()
    assert h.return_to_terminal() == ([EndAgentInput()], None)
    assert h.mode == "handing_back"
    assert h.host_exited() == [StartTui()]
    assert h.mode == "local" and h.tui_running


def echo(message: dict[str, Any]) -> dict[str, Any]:
    return {**message, "isReplay": True}


RESULT = {"type": "result", "subtype": "success"}


def test_return_waits_for_the_running_turn_or_interrupts_it_on_request() -> None:
    h = remote()
    h.client_prompt(prompt("work"))
    assert h.return_to_terminal() == ([], None)
    assert "after the current turn" in h.status().detail
    assert h.client_prompt(prompt("more")) == [Deliver(prompt("more"))]  # still taking input: not lost
    assert h.return_to_terminal(interrupt=True) == ([InterruptAgent()], None)
    assert h.agent_output(echo(prompt("work"))) == []
    assert h.agent_output(RESULT) == []  # "more" was given to it and not echoed yet: still working
    assert h.agent_output(echo(prompt("more"))) == []
    assert h.agent_output(RESULT) == [EndAgentInput()]
    queued = prompt("late")
    assert h.client_prompt(queued) == []  # its input has ended: kept for the next hand-off
    assert h.host_exited() == [StartTui(), EndTui()]
    assert h.mode == "handing_off" and h.queued == [queued]


def test_return_requested_while_handing_off_runs_after_the_queued_prompts() -> None:
    h = HandOff()
    h.client_prompt(prompt("a"))
    assert h.return_to_terminal() == ([], None)
    h.tui_exited(143)
    assert h.host_started() == [Deliver(prompt("a"))]
    assert h.mode == "handing_back"
    assert h.agent_output({"type": "system", "subtype": "init"}) == []
    assert h.agent_output(echo(prompt("a"))) == []
    assert h.agent_output(RESULT) == [EndAgentInput()]


def test_the_tui_ending_by_itself_ends_tether_claude() -> None:
    h = HandOff()
    assert h.tui_exited(0) == [Exit(0)]
    assert h.mode == "ended"
    assert h.client_prompt(prompt("x")) == [Dropped((prompt("x"),), "the session has ended at the terminal")]


def test_a_failed_headless_run_drops_its_queue_and_goes_back_to_the_terminal() -> None:
    h = HandOff()
    h.client_prompt(prompt("a"))
    h.tui_exited(143)
    actions = h.host_exited(failed="claude could not start")
    assert actions == [Dropped((prompt("a"),), "claude could not start"), StartTui()]
    assert h.mode == "local"


def test_interrupts_go_where_the_turn_runs() -> None:
    h = HandOff()
    assert h.interrupt() == []
    h.local_turn_changed(True)
    assert h.interrupt() == [InterruptTui()]
    h = remote()
    assert h.interrupt() == [InterruptAgent()]
    h.return_to_terminal()  # idle: input ended
    assert h.interrupt() == []


def test_a_permission_at_the_terminal_is_only_shown_while_local() -> None:
    h = remote()
    h.permission_at_terminal("Bash")
    assert h.status().waiting_tool is None
    assert h.status().to_json() == {"state": "remote", "detail": h.status().detail, "waiting_at_terminal": None,
                                    "queued_prompts": 0}


def test_return_at_the_terminal_is_a_no_op() -> None:
    h = HandOff()
    assert h.return_to_terminal() == ([], None)
    assert h.mode == "local"


def ended() -> HandOff:
    h = HandOff()
    h.tui_exited(0)
    return h


def test_an_ended_session_refuses_take_over_and_return_and_shows_it() -> None:
    h = ended()
    assert h.take_over() == ([], "The session has ended at the terminal.")
    assert h.return_to_terminal() == ([], "The session has ended at the terminal.")
    assert h.interrupt() == []
    assert h.status().to_json() == {"state": "ended", "detail": "The session has ended at the terminal",
                                    "waiting_at_terminal": None, "queued_prompts": 0}


def test_a_headless_run_ending_after_shutdown_does_not_restart_the_tui() -> None:
    h = HandOff()
    h.client_prompt(prompt("a"))
    h.tui_exited(143)
    h.shutdown()
    assert h.mode == "ended"
    assert h.host_exited() == []
    assert h.host_exited(failed="killed") == [Dropped((prompt("a"),), "killed")]
    assert h.mode == "ended"


def test_a_late_host_start_outside_a_hand_off_does_nothing() -> None:
    h = HandOff()
    assert h.host_started() == [] and h.mode == "local"
    h = remote()
    assert h.host_started() == [] and h.mode == "remote"


def test_a_remote_turn_ends_with_its_result_and_other_output_changes_nothing() -> None:
    h = remote()
    p = prompt("work")
    h.client_prompt(p)
    assert h.agent_output(echo(p)) == [] and h.remote_turn
    assert h.agent_output({"type": "assistant", "message": {"content": []}}) == [] and h.remote_turn
    assert h.agent_output(RESULT) == [] and not h.remote_turn and h.mode == "remote"


def test_a_prompt_without_uuid_counts_as_work_until_the_run_says_otherwise() -> None:
    h = remote()
    assert h.client_prompt({"type": "user", "message": {"role": "user", "content": "x"}})
    assert h.remote_turn and h.awaiting == set()
    assert h.agent_output({"type": "system", "subtype": "init"}) == [] and h.remote_turn
    assert h.agent_output(RESULT) == [] and not h.remote_turn


def test_returning_twice_ends_the_input_once() -> None:
    h = remote()
    assert h.return_to_terminal() == ([EndAgentInput()], None)
    assert h.return_to_terminal() == ([], None)
    assert h.status().detail == "Returning to the terminal…"


def test_status_while_handing_off() -> None:
    h = HandOff()
    h.local_turn_changed(True)
    h.client_prompt(prompt("x"))
    assert h.status().detail == "Handing over after the turn running at the terminal"
    h.permission_at_terminal("Bash")
    assert h.status().detail == ("Handing over after the turn running at the terminal "
                                 "(waiting at the terminal: Bash needs permission)")
    h.local_turn_changed(False)
    assert h.status().detail == "Handing over from the terminal…" and h.status().queued == 1
