"""Warm start for the MTA pipe: `abusepipe ingest -` without paying the imports once per message.

An MTA's pipe(8) starts one `abusepipe ingest -` per message, and most of such a process's time is
spent importing the parser, pydantic and SQLAlchemy. As Mercurial's chg and ssh's ControlPersist do, the
first piped message also starts a *warm process* in the background: it imports all that once, then
listens on a socket private to the user. Every later `ingest -` is a small client: it sends its
arguments, working directory and environment; the warm process forks a child for it, and once the
client gives the go-ahead the child receives its standard input, output and error (the file
descriptors themselves) and runs the very same command as the cold path would, on them. The child's
exit status becomes the client's.

- The child is bound to its client: a signal the client receives (pipe(8)'s timeout, Ctrl-C) is passed
  on, and when the client dies (SIGKILL) the child is killed, as the command would be in one process.
- The warm process ends after `ABUSEPIPE_WARM_SECONDS` idle seconds (default 60; 0 turns warm start
  off), on SIGTERM, when its socket is taken over, and as soon as any module it loaded changes on disk
  (an upgrade, an edit): that client runs cold and the next one starts a fresh warm process.
- Whatever goes wrong before the child took the message (no warm process, a stale one, a refused
  socket), the client runs the command itself: warm start can make a message faster, never lost.

`protocol` holds what both sides share; `client` runs in the short-lived command (stdlib only, it must
cost nothing), `server` in the warm process.
"""
