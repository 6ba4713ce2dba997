"""
Scripts: what the "model" does with a run, step by step, as plain values.

A :class:`Script` is a frozen attrs record holding a tuple of steps (each one a frozen
record too) and what happens when the client cancels. Its builder methods return new
scripts, so scripts compose and can be shared between tests. The server's driver
(:mod:`runflow.server`) plays a script against the engine, one poll at a time.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import attrs

from runflow._model import ErrorCode, IncompleteReason, RunObject, ToolCall, Usage

__all__ = [
    "DEFAULT_REPLY",
    "SCENARIOS",
    "Cancel",
    "Complete",
    "Expire",
    "Fail",
    "FaultTarget",
    "HttpFault",
    "MarkIncomplete",
    "NeverAnswer",
    "RequireAction",
    "Script",
    "ScriptMap",
    "ScriptSource",
    "ScriptedCall",
    "Start",
    "Step",
    "canned_usage",
    "select_script",
]

#: The assistant's reply when a script (or ``runflow serve`` without one) completes a
#: run without saying what to answer.
DEFAULT_REPLY = "Hello from runflow."

#: The requests a :class:`HttpFault` can hit.
FaultTarget = Literal["retrieve", "submit_tool_outputs", "cancel", "any"]


def _count(name: str) -> Callable[[object, attrs.Attribute[int], int], None]:
    def check(_: object, __: attrs.Attribute[int], value: int) -> None:
        if type(value) is not int or value < 0:
            msg = f"{name}: expected a whole number >= 0, got {value!r}"
            raise ValueError(msg)

    return check


def _usage(value: Usage | Mapping[str, int] | None) -> Usage | None:
    given: object = value  # untyped callers pass anything
    if given is None or isinstance(given, Usage):
        return given
    if isinstance(given, Mapping):
        prompt = int(given.get("prompt_tokens", 0))
        completion = int(given.get("completion_tokens", 0))
        return Usage.of(prompt, completion)
    msg = f"usage: expected a runflow.Usage or a mapping of token counts, got {value!r}"
    raise TypeError(msg)


def canned_usage(reply: str | None) -> Usage:
    """The usage a scripted reply reports when its step gives none: 10 prompt tokens
    and one completion token per word (at least one)."""
    words = len(reply.split()) if reply else 0
    return Usage.of(10, max(1, words))


# --- tool calls -------------------------------------------------------------------------


@typing.final
@attrs.frozen(kw_only=True)
class ScriptedCall:
    """
    A function tool call a script asks for.

    Attributes:
        name: The function's name; ``None`` means the run's first function tool.
        arguments: The JSON-encoded arguments.
        id: The call id; ``None`` makes a fresh OpenAI-shaped ``call_...`` id each time.

    .. versionadded:: 0.1.0
    """

    name: str | None = None
    arguments: str = "{}"
    id: str | None = None

    @classmethod
    def of(cls, value: object) -> ScriptedCall:
        """
        Read a call given as a :class:`ScriptedCall`, a :class:`runflow.ToolCall`, a
        wire dict (``{"id", "type", "function": {"name", "arguments"}}``), a short dict
        (``{"name", "arguments"}``, arguments as a string or any JSON value), a
        ``(name, arguments)`` pair or a bare function name.
        """
        if isinstance(value, ScriptedCall):
            return value
        if isinstance(value, ToolCall):
            return cls(name=value.function.name, arguments=value.function.arguments, id=value.id)
        if isinstance(value, str):
            return cls(name=value)
        if isinstance(value, tuple) and len(value) == 2:  # noqa: PLR2004 - (name, arguments)
            return cls(name=value[0], arguments=_arguments(value[1]))
        if isinstance(value, Mapping):
            function = value.get("function", value)
            if not isinstance(function, Mapping):
                msg = f"tool call: 'function' must be a mapping, got {function!r}"
                raise TypeError(msg)
            name = function.get("name")
            if name is not None and not isinstance(name, str):
                msg = f"tool call: name must be a string, got {name!r}"
                raise TypeError(msg)
            call_id = value.get("id")
            if call_id is not None and not isinstance(call_id, str):
                msg = f"tool call: id must be a string, got {call_id!r}"
                raise TypeError(msg)
            return cls(name=name, arguments=_arguments(function.get("arguments", "{}")), id=call_id)
        msg = f"tool call: cannot read {value!r}"
        raise TypeError(msg)


def _arguments(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --- steps ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Timed:
    #: Polls that see the run unchanged before the step happens.
    polls: int = attrs.field(default=0, validator=_count("polls"))
    #: Virtual seconds the step takes, counted from the previous step.
    after: int = attrs.field(default=0, validator=_count("after"))


@typing.final
@attrs.frozen(kw_only=True)
class Start(_Timed):
    """
    ``queued`` → ``in_progress``. Scripts start runs by themselves when the next step
    needs it; an explicit start lets a run stay queued for some polls or seconds.

    .. versionadded:: 0.1.0
    """


@typing.final
@attrs.frozen(kw_only=True)
class RequireAction(_Timed):
    """
    Ask for tool calls (``requires_action``), then wait for the client's outputs. The
    calls become a ``tool_calls`` run step that holds the outputs once submitted.

    .. versionadded:: 0.1.0
    """

    tool_calls: tuple[ScriptedCall, ...] = (ScriptedCall(),)
    usage: Usage | None = attrs.field(default=None, converter=_usage)


@typing.final
@attrs.frozen(kw_only=True)
class Complete(_Timed):
    """
    End the run ``completed`` (or ``incomplete``, if the usage crosses a budget of the
    run). A reply becomes an assistant message and a ``message_creation`` step.

    .. versionadded:: 0.1.0
    """

    reply: str | None = DEFAULT_REPLY
    usage: Usage | None = attrs.field(default=None, converter=_usage)


@typing.final
@attrs.frozen(kw_only=True)
class Fail(_Timed):
    """
    End the run ``failed`` with ``last_error`` ``{code, message}``.

    .. versionadded:: 0.1.0
    """

    code: ErrorCode = "server_error"
    message: str = "The server had an error while processing your request."


@typing.final
@attrs.frozen(kw_only=True)
class MarkIncomplete(_Timed):
    """
    End the run ``incomplete`` because a token budget was reached; a partial reply
    becomes an ``incomplete`` message.

    .. versionadded:: 0.1.0
    """

    reason: IncompleteReason = "max_completion_tokens"
    reply: str | None = None
    usage: Usage | None = attrs.field(default=None, converter=_usage)


@typing.final
@attrs.frozen(kw_only=True)
class Expire(_Timed):
    """
    Expire the run now, whatever its ``expires_at`` (the system gave up on it).

    .. versionadded:: 0.1.0
    """


@typing.final
@attrs.frozen(kw_only=True)
class NeverAnswer:
    """
    The model never answers: virtual time jumps to the run's ``expires_at`` on the
    next poll, so the run expires (LIFECYCLE R3.4).

    .. versionadded:: 0.1.0
    """

    polls: int = attrs.field(default=0, validator=_count("polls"))


@typing.final
@attrs.frozen(kw_only=True)
class Cancel(_Timed):
    """
    ``cancelling`` → ``cancelled``: the cancel succeeds (the default reaction to a
    client's cancel).

    .. versionadded:: 0.1.0
    """


#: One step of a script.
Step = Start | RequireAction | Complete | Fail | MarkIncomplete | Expire | NeverAnswer
#: What a script does once the client cancelled: a step that ends the run.
CancelStep = Cancel | Complete | Fail | MarkIncomplete | Expire | NeverAnswer
_ENDS = (Complete, Fail, MarkIncomplete, Expire, NeverAnswer)
_STEPS = (Start, RequireAction, *_ENDS)


@typing.final
@attrs.frozen(kw_only=True)
class HttpFault:
    """
    Fault injection: requests about a run answered with an HTTP error (OpenAI's error
    JSON), the run left unchanged. The SDK raises the matching exception (and retries
    429 and 5xx by itself, ``max_retries`` times).

    Attributes:
        status: The HTTP status (429, 500, 503…).
        on: Which requests fail: ``"retrieve"`` (polls), ``"submit_tool_outputs"``,
            ``"cancel"`` or ``"any"`` of them.
        skip: How many such requests succeed first.
        times: How many fail, one after the other.
        message: The error message; a status-specific default if None.
        code: The error code; a status-specific default if None.

    .. versionadded:: 0.1.0
    """

    status: int = 500
    on: FaultTarget = "any"
    skip: int = attrs.field(default=0, validator=_count("skip"))
    times: int = attrs.field(default=1, validator=_count("times"))
    message: str | None = None
    code: str | None = None

    def __attrs_post_init__(self) -> None:
        if type(self.status) is not int or not 400 <= self.status <= 599:  # noqa: PLR2004
            msg = f"HttpFault.status: expected an HTTP error status 400..599, got {self.status!r}"
            raise ValueError(msg)
        if self.on not in ("retrieve", "submit_tool_outputs", "cancel", "any"):
            msg = f"HttpFault.on: unknown request kind {self.on!r}"
            raise ValueError(msg)

    def hits(self, kind: str, seen: int) -> bool:
        """Whether the request of ``kind`` that ``seen`` earlier ones of it preceded fails."""
        return (self.on in {"any", kind}) and self.skip <= seen < self.skip + self.times


# --- the script -------------------------------------------------------------------------


def _steps(value: Iterable[Step]) -> tuple[Step, ...]:
    return tuple(value)


def _faults(value: Iterable[HttpFault]) -> tuple[HttpFault, ...]:
    return tuple(value)


@typing.final
@attrs.frozen(kw_only=True)
class Script:
    """
    What the "model" does with a run, step by step.

    Build one with the fluent methods (each returns a new script) or from the step
    records; scripts are plain values that compose with ``+``::

        ask = Script().require_action({"name": "get_weather", "arguments": {"city": "Paris"}})
        script = ask.complete("It is sunny in Paris.")

    Each step waits ``polls`` polls (retrieves that see the run unchanged) and ``after``
    virtual seconds (the engine's clock jumps forward, so a ten-minute script runs in
    milliseconds). A run that is ``queued`` is started before a step that needs it. A
    script ends with a step that ends the run (:meth:`complete`, :meth:`fail`,
    :meth:`mark_incomplete`, :meth:`expire`, :meth:`never_answer`).

    Attributes:
        steps: The steps, in order.
        on_cancel: What happens once the client cancelled (default :class:`Cancel`:
            the run ends ``cancelled``); another ending step makes the cancel lose the
            race (LIFECYCLE T10).
        faults: HTTP errors injected into requests about the run.

    .. versionadded:: 0.1.0
    """

    steps: tuple[Step, ...] = attrs.field(default=(), converter=_steps)
    on_cancel: CancelStep = Cancel()
    faults: tuple[HttpFault, ...] = attrs.field(default=(), converter=_faults)

    # --- builder --------------------------------------------------------------------

    def then(self, *steps: Step) -> Script:
        """This script followed by ``steps``."""
        return attrs.evolve(self, steps=(*self.steps, *steps))

    def __add__(self, other: Script) -> Script:
        """This script's steps and faults, then ``other``'s (``other``'s cancel reaction
        wins unless it is the default)."""
        if not isinstance(other, Script):
            return NotImplemented
        on_cancel = other.on_cancel if other.on_cancel != Cancel() else self.on_cancel
        return Script(
            steps=(*self.steps, *other.steps),
            on_cancel=on_cancel,
            faults=(*self.faults, *other.faults),
        )

    def start(self, *, polls: int = 0, after: int = 0) -> Script:
        """Start the run (``queued`` → ``in_progress``) after ``polls`` and ``after``."""
        return self.then(Start(polls=polls, after=after))

    def require_action(
        self,
        *tool_calls: object,
        usage: Usage | Mapping[str, int] | None = None,
        polls: int = 0,
        after: int = 0,
    ) -> Script:
        """
        Ask for these function tool calls (see :meth:`ScriptedCall.of` for the forms a
        call may take; none: one call of the run's first function tool with ``{}``).
        ``usage`` is added to the run's usage.
        """
        calls = tuple(ScriptedCall.of(c) for c in tool_calls) or (ScriptedCall(),)
        return self.then(RequireAction(tool_calls=calls, usage=usage, polls=polls, after=after))

    def complete(
        self,
        reply: str | None = DEFAULT_REPLY,
        *,
        usage: Usage | Mapping[str, int] | None = None,
        polls: int = 0,
        after: int = 0,
    ) -> Script:
        """End the run ``completed`` with ``reply`` as the assistant's message."""
        return self.then(Complete(reply=reply, usage=usage, polls=polls, after=after))

    def fail(
        self,
        code: ErrorCode = "server_error",
        message: str | None = None,
        *,
        polls: int = 0,
        after: int = 0,
    ) -> Script:
        """End the run ``failed`` with ``last_error`` ``{code, message}``."""
        text = message if message is not None else _FAIL_MESSAGES.get(code, Fail().message)
        return self.then(Fail(code=code, message=text, polls=polls, after=after))

    def mark_incomplete(
        self,
        reason: IncompleteReason = "max_completion_tokens",
        *,
        reply: str | None = None,
        usage: Usage | Mapping[str, int] | None = None,
        polls: int = 0,
        after: int = 0,
    ) -> Script:
        """End the run ``incomplete`` because ``reason``'s token budget was reached."""
        return self.then(
            MarkIncomplete(reason=reason, reply=reply, usage=usage, polls=polls, after=after)
        )

    def expire(self, *, polls: int = 0, after: int = 0) -> Script:
        """Expire the run (the system gives up on it)."""
        return self.then(Expire(polls=polls, after=after))

    def never_answer(self, *, polls: int = 0) -> Script:
        """Never answer: the run expires when its ``expires_at`` passes (virtually)."""
        return self.then(NeverAnswer(polls=polls))

    def cancel_loses(
        self,
        reply: str | None = DEFAULT_REPLY,
        *,
        usage: Usage | Mapping[str, int] | None = None,
        polls: int = 0,
        after: int = 0,
    ) -> Script:
        """A client's cancel loses the race: the run completes (``cancelling`` →
        ``completed``) with ``reply``."""
        return self.when_cancelled(Complete(reply=reply, usage=usage, polls=polls, after=after))

    def when_cancelled(self, step: CancelStep) -> Script:
        """What happens after the client cancels: any step that ends the run."""
        given: object = step  # untyped callers pass anything
        if not isinstance(given, (Cancel, *_ENDS)):
            msg = f"when_cancelled: expected a step that ends the run, got {step!r}"
            raise TypeError(msg)
        return attrs.evolve(self, on_cancel=step)

    def http_error(
        self,
        status: int = 500,
        *,
        on: FaultTarget = "any",
        skip: int = 0,
        times: int = 1,
        message: str | None = None,
        code: str | None = None,
    ) -> Script:
        """Inject an HTTP error: see :class:`HttpFault`."""
        fault = HttpFault(status=status, on=on, skip=skip, times=times, message=message, code=code)
        return attrs.evolve(self, faults=(*self.faults, fault))

    # --- checking -------------------------------------------------------------------

    def check(self) -> Script:
        """
        Return this script if it is playable: it ends with a step that ends the run,
        and no step follows one.

        Raises:
            ValueError: the script never ends its run, or has steps after the end.
        """
        steps: tuple[object, ...] = self.steps  # untyped callers pass anything
        for i, step in enumerate(steps):
            if not isinstance(step, _STEPS):
                msg = f"Script step {i} is not a step: {step!r}"
                raise TypeError(msg)
            if isinstance(step, _ENDS) and i != len(self.steps) - 1:
                msg = f"Script step {i} ({type(step).__name__}) ends the run; steps follow it"
                raise ValueError(msg)
        if not self.steps or not isinstance(self.steps[-1], _ENDS):
            msg = (
                "a Script must end its run: finish it with complete(), fail(), "
                "mark_incomplete(), expire() or never_answer()"
            )
            raise ValueError(msg)
        return self


_FAIL_MESSAGES: dict[str, str] = {
    "server_error": "The server had an error while processing your request.",
    "rate_limit_exceeded": "Rate limit reached. Please try again later.",
    "invalid_prompt": "The prompt was flagged as potentially violating our usage policy.",
}


# --- choosing a script for a run --------------------------------------------------------


@typing.final
@attrs.frozen(kw_only=True)
class ScriptMap:
    """
    Scripts keyed by thread id, metadata or assistant id, most specific first.

    Attributes:
        threads: Thread id → script.
        metadata: Metadata key → value → script (the first key, in this mapping's
            order, whose value the run's metadata has).
        assistants: Assistant id → script.
        default: For every other run; None leaves them to the test (manual mode).

    .. versionadded:: 0.1.0
    """

    threads: Mapping[str, Script] = attrs.field(factory=dict)
    metadata: Mapping[str, Mapping[str, Script]] = attrs.field(factory=dict)
    assistants: Mapping[str, Script] = attrs.field(factory=dict)
    default: Script | None = None

    def for_run(self, run: RunObject) -> Script | None:
        """The script for ``run``, or None."""
        if run.thread_id in self.threads:
            return self.threads[run.thread_id]
        meta = run.metadata or {}
        for key, by_value in self.metadata.items():
            value = meta.get(key)
            if value is not None and value in by_value:
                return by_value[value]
        if run.assistant_id in self.assistants:
            return self.assistants[run.assistant_id]
        return self.default

    def scripts(self) -> list[Script]:
        """Every script of this map."""
        out = [*self.threads.values(), *self.assistants.values()]
        for by_value in self.metadata.values():
            out.extend(by_value.values())
        if self.default is not None:
            out.append(self.default)
        return out


#: What ``create_app(script=...)`` and ``openai_client(script=...)`` accept: one script
#: for every run, assistant id → script, a :class:`ScriptMap`, a function of the run,
#: or None (manual mode).
ScriptSource = (
    Script | Mapping[str, Script] | ScriptMap | Callable[[RunObject], Script | None] | None
)


def select_script(source: ScriptSource) -> Callable[[RunObject], Script | None]:
    """
    A function giving each run its script, from any :data:`ScriptSource`; every script
    it can name is checked first.

    Raises:
        ValueError: a script does not end its run.
        TypeError: ``source`` is none of the accepted forms.
    """
    if source is None:
        return _manual
    if isinstance(source, Script):
        script = source.check()
        return lambda _run: script
    if isinstance(source, ScriptMap):
        for s in source.scripts():
            s.check()
        return source.for_run
    if isinstance(source, Mapping):
        by_assistant = ScriptMap(assistants=dict(source))
        found: list[object] = list(by_assistant.scripts())
        for item in found:
            if not isinstance(item, Script):
                msg = f"script mapping: expected assistant id -> Script, got {item!r}"
                raise TypeError(msg)
            item.check()
        return by_assistant.for_run
    given: object = source
    if callable(given):
        return _checked(source)
    msg = f"script: expected a Script, a mapping, a ScriptMap or a function, got {given!r}"
    raise TypeError(msg)


def _manual(_run: RunObject) -> Script | None:
    return None


def _checked(choose: Callable[[RunObject], Script | None]) -> Callable[[RunObject], Script | None]:
    def select(run: RunObject) -> Script | None:
        script: object = choose(run)  # a user's function may return anything
        if script is None:
            return None
        if not isinstance(script, Script):
            msg = f"the script function returned {script!r}, not a Script or None"
            raise TypeError(msg)
        return script.check()

    return select


def _default_tool_name(run: RunObject) -> str | None:
    """The run's first function tool's name (for a call that names none)."""
    for tool in run.tools:
        function = getattr(tool, "function", None)
        if function is not None:
            return str(function.name)
    return None


def resolve_calls(
    step: RequireAction, run: RunObject, new_id: Callable[[], str]
) -> list[dict[str, Any]]:
    """The wire tool calls ``step`` asks of ``run``: names and ids filled in."""
    calls = []
    for call in step.tool_calls:
        name = call.name if call.name is not None else _default_tool_name(run)
        if name is None:
            msg = "the script asks for a tool call, but the run has no function tool"
            raise ValueError(msg)
        calls.append(
            {
                "id": call.id if call.id is not None else new_id(),
                "type": "function",
                "function": {"name": name, "arguments": call.arguments},
            }
        )
    return calls


#: Named scripts, for ``runflow serve --scenario NAME`` and for tests.
SCENARIOS: Mapping[str, Script] = {
    "reply": Script().complete(),
    "tool-call": Script().require_action().complete("Thanks, that helps."),
    "slow": Script().start(after=5).complete(after=240),
    "fail": Script().fail("rate_limit_exceeded"),
    "server-error": Script().fail("server_error"),
    "incomplete": Script().mark_incomplete(
        "max_completion_tokens", reply="This answer was cut", usage={"completion_tokens": 256}
    ),
    "expire": Script().start().never_answer(),
    "cancel-loses": Script().start(polls=1).complete(polls=2).cancel_loses(),
    "rate-limited": Script().complete().http_error(429, on="retrieve", times=1),
}
