"""``tether`` / ``tether chat``: Tether's interactive terminal front end (prompt_toolkit + rich),
a front end of the in-process REPL bridge (:mod:`tether.bridge.repl`)."""
