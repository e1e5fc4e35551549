"""``tether agent``: Tether's own worker child, interchangeable with the stock ``claude -p``.

It speaks the CLI's stream-json protocol on stdin/stdout (docs/protocol.md §5). Layout:

* pure cores (no I/O): ``permissions`` (modes and rules), ``turn`` (the turn state
  machine), ``stream`` (Messages API events → content blocks), ``scenario`` (the
  scripted model's file format — documented there), ``wire`` (output line builders);
* adapters: ``stdio`` (stdin frames, the one stdout writer), ``broker`` (open
  permission requests), ``runner`` (the agent loop), ``session`` (control requests,
  queueing, lifecycle), ``main`` (backend choice, signals, exit code);
* ``backends``: ``anthropic`` (official SDK, streaming) and ``scripted`` (offline);
* ``tools``: Bash, Read, Write, Edit, Glob, Grep, LS.
"""
