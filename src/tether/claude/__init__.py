"""``tether claude``: Claude Code's own TUI at the terminal, the same conversation from a phone
(docs/protocol.md §14.7). :mod:`~tether.claude.session` runs it; the rules it follows are pure, in
:mod:`tether.protocol.claude_transcript` and :mod:`tether.protocol.claude_handoff`."""
