"""One message per turn of the event loop, for the message pumps that do a frame's work.

A Textual message pump handles every message already queued before it gives the loop back: a
screen's first show (compose, mount, styles, layout, the first render of every widget) ran as
one 25-40 ms step at 160x48, holding up every other task (the run's own callbacks, keys). With
this mixin each message is its own step: the loop runs whatever else is ready between them.
"""

from __future__ import annotations

import asyncio

from textual.message import Message
from textual.message_pump import MessagePump


class Yielding(MessagePump):
    """A message pump that yields to the event loop after each message it handles."""

    async def _dispatch_message(self, message: Message) -> None:
        await super()._dispatch_message(message)
        await asyncio.sleep(0)
