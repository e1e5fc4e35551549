"""The session service, split by concern: every write of the server happens here, in one
transaction, with its frames queued for after the commit. Routers and web pages parse a request,
call one of these and serialize the answer (docs/architecture.md §2).

* ``log``: a session's event log (client and worker events) and ``effects`` of each event;
* ``sessions``: create, read, rename, archive;
* ``permissions``: answers to permission requests;
* ``workers``: worker presence, epochs, v2 state, deliveries, the open v1 sockets;
* ``dispatch``: work items, long polls, leases; ``environments``: E1–E7;
* ``accounts``: policy, members, tokens, login links, web sessions, the device flow;
* ``files``: attachments.
"""
