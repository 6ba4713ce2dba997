"""
The server's world beside the engine: threads, messages, run steps, and each run's
stream of server-sent events in the real order.

The hub subscribes to the engine. Every run event arrives in sequence order; for a
scripted run the hub first adds the step and message events that belong before it
(spec/run_stream_event.md): the tool-calls step before ``requires_action``, its
completion before the ``queued`` of a submit, the message-creation step and the message
before ``completed``/``incomplete``, the end of open steps before a run ends otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import threading
import typing
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from runflow._events import RunEvent
from runflow._model import RunObject, Usage

__all__ = ["Hub", "SseEvent", "new_id"]

_ID_TABLE = bytes.maketrans(b"-_", b"xQ")
#: Ended runs whose event logs are kept for streams that still read them.
_KEEP_ENDED = 1000
#: Recently processed records per run (to know a change has been seen).
_SEEN = 16
_STEP_END = {"cancelled": "cancelled", "failed": "failed", "expired": "expired"}
_TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled", "expired"})

#: One server-sent event: its name and its JSON data.
SseEvent = tuple[str, Any]


def new_id(prefix: str) -> str:
    """A fresh OpenAI-shaped id: ``prefix`` and 24 letters and digits."""
    return prefix + base64.urlsafe_b64encode(os.urandom(18)).translate(_ID_TABLE).decode()


def _chunks(text: str) -> list[str]:
    """The reply as streamed deltas: word by word, spaces kept."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)] if text else []


@typing.final
class Hub:
    """Threads, messages, run steps and event logs, shared by every request (thread-safe)."""

    def __init__(self, now: Callable[[], int]) -> None:
        self._now = now
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self.threads: dict[str, dict[str, Any]] = {}
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._steps: dict[str, list[dict[str, Any]]] = {}
        self._logs: dict[str, list[SseEvent]] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._status: dict[str, str] = {}
        self._seen: dict[str, deque[RunObject]] = {}
        self._scripted: set[str] = set()
        self._replies: dict[str, tuple[str | None, Usage | None]] = {}
        self._outputs: dict[str, dict[str, str]] = {}
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    # --- threads and messages -----------------------------------------------------------

    def add_thread(
        self, thread_id: str, *, metadata: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Create (or return) a thread object."""
        with self._lock:
            thread = self.threads.get(thread_id)
            if thread is None:
                thread = {
                    "id": thread_id,
                    "object": "thread",
                    "created_at": self._now(),
                    "metadata": dict(metadata or {}),
                    "tool_resources": {},
                }
                self.threads[thread_id] = thread
                self._messages.setdefault(thread_id, [])
            return thread

    def drop_thread(self, thread_id: str) -> None:
        """Forget a thread whose creation was refused after all."""
        with self._lock:
            self.threads.pop(thread_id, None)
            self._messages.pop(thread_id, None)

    def add_message(
        self,
        thread_id: str,
        *,
        role: str,
        content: object,
        attachments: object = None,
        metadata: Mapping[str, str] | None = None,
        run_id: str | None = None,
        assistant_id: str | None = None,
    ) -> dict[str, Any]:
        """Add a finished message (a user's, or one given in a request) to a thread."""
        now = self._now()
        message = {
            "id": new_id("msg_"),
            "object": "thread.message",
            "created_at": now,
            "thread_id": thread_id,
            "status": "completed",
            "incomplete_details": None,
            "completed_at": now,
            "incomplete_at": None,
            "role": role,
            "content": _content(content),
            "assistant_id": assistant_id,
            "run_id": run_id,
            "attachments": attachments if isinstance(attachments, list) else [],
            "metadata": dict(metadata or {}),
        }
        with self._lock:
            self._messages.setdefault(thread_id, []).append(message)
        return message

    def messages(self, thread_id: str) -> list[dict[str, Any]]:
        """A thread's messages, oldest first."""
        with self._lock:
            return list(self._messages.get(thread_id, ()))

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        """A run's steps, oldest first."""
        with self._lock:
            return list(self._steps.get(run_id, ()))

    # --- what the script says before the engine hears it --------------------------------

    def script(self, run_id: str) -> None:
        """Mark a run as scripted: its changes make run steps and messages."""
        with self._lock:
            self._scripted.add(run_id)

    def expect_reply(self, run_id: str, reply: str | None, usage: Usage | None) -> None:
        """The reply the next end of ``run_id`` (completed or incomplete) carries."""
        with self._lock:
            self._replies[run_id] = (reply, usage)

    def expect_outputs(self, run_id: str, outputs: Sequence[Mapping[str, Any]]) -> None:
        """The tool outputs the next submit of ``run_id`` carries."""
        with self._lock:
            self._outputs[run_id] = {
                str(o.get("tool_call_id")): str(o.get("output")) for o in outputs
            }

    def forget_expectations(self, run_id: str) -> None:
        """Drop what a refused change expected."""
        with self._lock:
            self._replies.pop(run_id, None)
            self._outputs.pop(run_id, None)

    # --- events -------------------------------------------------------------------------

    def track(self, run_id: str) -> list[SseEvent]:
        """The run's event log (created if new): streams read it from a cursor."""
        with self._lock:
            return self._logs.setdefault(run_id, [])

    def track_thread(self, thread_id: str) -> None:
        """Log the events of every run created on this thread from now on."""
        self.add_thread(thread_id)

    def on_event(self, event: RunEvent) -> None:
        """The engine subscriber: log the event, after the events that belong before it."""
        run = event.data
        run_id = run.id
        with self._lock:
            log = self._logs.get(run_id)
            if log is None:
                if run.thread_id not in self.threads:
                    return  # a run the API never touched
                log = self._logs[run_id] = []
            if run_id in self._scripted:
                log.extend(self._derive(event.event, run))
            log.append((event.event, run.to_dict()))
            self._status[run_id] = run.status.value
            self._seen.setdefault(run_id, deque(maxlen=_SEEN)).append(run)
            if run.status.value in _TERMINAL:
                self._end(run_id)
            self._changed.notify_all()
            waiters = list(self._waiters.get(run_id, ()))
        for loop, flag in waiters:
            with contextlib.suppress(RuntimeError):  # the stream's loop closed meanwhile
                loop.call_soon_threadsafe(flag.set)

    def _end(self, run_id: str) -> None:
        self._replies.pop(run_id, None)
        self._outputs.pop(run_id, None)
        self._scripted.discard(run_id)
        self._ended[run_id] = None
        while len(self._ended) > _KEEP_ENDED:
            old, _ = self._ended.popitem(last=False)
            self._logs.pop(old, None)
            self._status.pop(old, None)
            self._seen.pop(old, None)

    def wait_seen(self, run: RunObject, timeout: float = 2.0) -> None:
        """Block until the hub has processed the change that made ``run`` (events of a
        change may be delivered by another thread a moment later)."""
        with self._changed:
            if run.thread_id not in self.threads and run.id not in self._logs:
                return
            self._changed.wait_for(lambda: run in self._seen.get(run.id, ()), timeout)

    def watch(
        self, run_id: str, loop: asyncio.AbstractEventLoop, flag: asyncio.Event
    ) -> Callable[[], None]:
        """Set ``flag`` (on ``loop``) whenever the run gets an event; returns unwatch."""
        entry = (loop, flag)
        with self._lock:
            self._waiters.setdefault(run_id, set()).add(entry)

        def unwatch() -> None:
            with self._lock:
                waiters = self._waiters.get(run_id)
                if waiters is not None:
                    waiters.discard(entry)
                    if not waiters:
                        del self._waiters[run_id]

        return unwatch

    def read(self, log: list[SseEvent], cursor: int) -> list[SseEvent]:
        """The events of ``log`` from ``cursor`` on."""
        with self._lock:
            return log[cursor:]

    # --- derived step and message events ------------------------------------------------

    def _derive(self, name: str, run: RunObject) -> list[SseEvent]:
        previous = self._status.get(run.id)
        status = run.status.value
        if name == "thread.run.requires_action":
            return self._tool_step(run)
        if name == "thread.run.queued" and previous == "requires_action":
            return self._finish_steps(run, "completed")
        if status in {"completed", "incomplete"}:
            out = self._finish_steps(run, "completed")
            if run.id in self._replies:
                reply, usage = self._replies.pop(run.id)
                out += self._reply(run, reply, usage)
            return out
        if status in _STEP_END:
            return self._finish_steps(run, _STEP_END[status])
        return []

    def _new_step(self, run: RunObject, kind: str, details: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": new_id("step_"),
            "object": "thread.run.step",
            "created_at": self._now(),
            "assistant_id": run.assistant_id,
            "thread_id": run.thread_id,
            "run_id": run.id,
            "type": kind,
            "status": "in_progress",
            "step_details": details,
            "last_error": None,
            "expired_at": None,
            "cancelled_at": None,
            "failed_at": None,
            "completed_at": None,
            "metadata": None,
            "usage": None,
        }

    def _tool_step(self, run: RunObject) -> list[SseEvent]:
        calls = [
            {
                "id": c.id,
                "type": "function",
                "function": {
                    "name": c.function.name,
                    "arguments": c.function.arguments,
                    "output": None,
                },
            }
            for c in run.tool_calls
        ]
        step = self._new_step(run, "tool_calls", {"type": "tool_calls", "tool_calls": calls})
        self._steps.setdefault(run.id, []).append(step)
        empty = {**step, "step_details": {"type": "tool_calls", "tool_calls": []}}
        out: list[SseEvent] = [
            ("thread.run.step.created", empty),
            ("thread.run.step.in_progress", empty),
        ]
        for index, call in enumerate(calls):
            delta = {
                "id": step["id"],
                "object": "thread.run.step.delta",
                "delta": {
                    "step_details": {
                        "type": "tool_calls",
                        "tool_calls": [{"index": index, **call}],
                    }
                },
            }
            out.append(("thread.run.step.delta", delta))
        return out

    def _finish_steps(self, run: RunObject, status: str) -> list[SseEvent]:
        """End the run's open steps with ``status``; a tool step gets its outputs."""
        out: list[SseEvent] = []
        now = self._now()
        outputs = self._outputs.pop(run.id, {})
        steps = self._steps.get(run.id, [])
        for i, step in enumerate(steps):
            if step["status"] != "in_progress":
                continue
            done = {**step, "status": status}
            if status == "completed":
                done["completed_at"] = now
                done["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            elif status == "failed":
                done["failed_at"] = now
                error = run.last_error
                code = error.code if error is not None else "server_error"
                done["last_error"] = {
                    "code": code if code == "rate_limit_exceeded" else "server_error",
                    "message": error.message if error is not None else "The run failed.",
                }
            elif status == "cancelled":
                done["cancelled_at"] = now
            else:
                done["expired_at"] = now
            details = step["step_details"]
            if details["type"] == "tool_calls" and status == "completed":
                calls = [
                    {**c, "function": {**c["function"], "output": outputs.get(c["id"])}}
                    for c in details["tool_calls"]
                ]
                done["step_details"] = {"type": "tool_calls", "tool_calls": calls}
            steps[i] = done
            out.append((f"thread.run.step.{status}", done))
        return out

    def _reply(self, run: RunObject, reply: str | None, usage: Usage | None) -> list[SseEvent]:
        """The message-creation step and the assistant's message of a run that ends."""
        if reply is None:
            return []
        now = self._now()
        finished = run.status.value == "completed"
        message_id = new_id("msg_")
        step = self._new_step(
            run,
            "message_creation",
            {"type": "message_creation", "message_creation": {"message_id": message_id}},
        )
        message = {
            "id": message_id,
            "object": "thread.message",
            "created_at": now,
            "thread_id": run.thread_id,
            "status": "in_progress",
            "incomplete_details": None,
            "completed_at": None,
            "incomplete_at": None,
            "role": "assistant",
            "content": [],
            "assistant_id": run.assistant_id,
            "run_id": run.id,
            "attachments": [],
            "metadata": {},
        }
        out: list[SseEvent] = [
            ("thread.run.step.created", step),
            ("thread.run.step.in_progress", step),
            ("thread.message.created", message),
            ("thread.message.in_progress", message),
        ]
        for chunk in _chunks(reply):
            delta = {
                "id": message_id,
                "object": "thread.message.delta",
                "delta": {
                    "content": [
                        {"index": 0, "type": "text", "text": {"value": chunk, "annotations": []}}
                    ]
                },
            }
            out.append(("thread.message.delta", delta))
        final = {**message, "content": _content(reply)}
        if finished:
            final.update(status="completed", completed_at=now)
            out.append(("thread.message.completed", final))
        else:
            final.update(
                status="incomplete", incomplete_at=now, incomplete_details={"reason": "max_tokens"}
            )
            out.append(("thread.message.incomplete", final))
        used = usage or Usage.of(0, 0)
        done_step = {
            **step,
            "status": "completed",
            "completed_at": now,
            "usage": {
                "prompt_tokens": used.prompt_tokens,
                "completion_tokens": used.completion_tokens,
                "total_tokens": used.total_tokens,
            },
        }
        out.append(("thread.run.step.completed", done_step))
        self._steps.setdefault(run.id, []).append(done_step)
        self._messages.setdefault(run.thread_id, []).append(final)
        return out


def _content(content: object) -> list[dict[str, Any]]:
    """Request content (a string or content parts) as message content blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": {"value": content, "annotations": []}}]
    blocks: list[dict[str, Any]] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, Mapping):
                continue
            if part.get("type") == "text":
                text = {"value": str(part.get("text", "")), "annotations": []}
                blocks.append({"type": "text", "text": text})
            elif part.get("type") in {"image_file", "image_url"}:
                blocks.append(dict(part))
    return blocks
