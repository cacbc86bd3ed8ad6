"""Find the messages attached to a mail: message/rfc822 and message/global parts, `.eml` and `.msg` files."""

from __future__ import annotations

from collections.abc import Iterable
from email.message import Message

from parsers.context import ParseContext
from parsers.headers import Defects
from parsers.mime import (
    MESSAGE_TYPES,
    content_type,
    decoded,
    enclosed_message,
    filename,
    leaves,
    parse_limited,
)
from parsers.msg import MsgError, is_msg, msg_to_message

_MSG_TYPES = ("application/vnd.ms-outlook", "application/x-msg")


def attached_messages(msg: Message, ctx: ParseContext, defects: Defects) -> list[Message]:
    """The messages attached directly to `msg` (not those inside them), in document order.

    For the input's own message the answer is computed once per context (its defects recorded in
    `ctx.defects`): attached .eml files are parsed and .msg files converted only once, however many
    detectors ask."""
    if msg is ctx.msg:
        if ctx.attached is None:
            ctx.attached = _attached(msg, ctx.parts(), ctx, ctx.defects)
        return ctx.attached
    return _attached(msg, leaves(msg, ctx.limits, defects), ctx, defects)


def _attached(msg: Message, parts: Iterable[Message], ctx: ParseContext, defects: Defects) -> list[Message]:
    out: list[Message] = []
    for part in parts:
        if part is msg:
            if content_type(msg) in MESSAGE_TYPES:
                # The whole mail is the forwarded message ("forward as attachment" of some webmails,
                # whose top-level Content-Type is message/rfc822).
                inner = enclosed_message(msg, ctx.limits, defects)
                if inner is not None:
                    out.append(inner)
            continue
        inner = as_message(part, ctx, defects)
        if inner is not None:
            out.append(inner)
    return out


def as_message(part: Message, ctx: ParseContext, defects: Defects) -> Message | None:
    ctype = content_type(part)
    if ctype in MESSAGE_TYPES:
        return enclosed_message(part, ctx.limits, defects)
    name = (filename(part) or "").lower()
    if ctype in _MSG_TYPES or name.endswith(".msg"):
        data = decoded(part, ctx.limits, defects)
        if is_msg(data):
            try:
                return msg_to_message(data, ctx.limits, defects)
            except MsgError as exc:
                defects.add(f"attached {name or 'Outlook message'}: {exc}")
        return None
    if name.endswith(".eml") and not ctype.startswith("text/html"):
        data = decoded(part, ctx.limits, defects)
        if data.strip():
            return parse_limited(data, ctx.limits)
    return None


def innermost(msg: Message, ctx: ParseContext, defects: Defects, depth: int = 0) -> list[tuple[Message, int]]:
    """Follow forwards of forwards down to the messages that attach nothing more (the junk)."""
    if depth >= ctx.limits.max_depth:
        defects.add(f"attached messages nested deeper than {ctx.limits.max_depth}: stopped there")
        return [(msg, depth)]
    children = attached_messages(msg, ctx, defects)
    if not children:
        return [(msg, depth)]
    out: list[tuple[Message, int]] = []
    for child in children:
        out.extend(innermost(child, ctx, defects, depth + 1))
    return out
