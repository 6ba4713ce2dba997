"""
The lifecycle as data, and the one shared ``transitions`` machine built from it.

This is the only module that imports :mod:`transitions`. A :class:`LifecycleProfile`
holds the transition table (LIFECYCLE §8) and the side effects of entering each
status (the "on entering" table of §8); :class:`Lifecycle` builds one
``Machine(model=None, auto_transitions=False, send_event=True)`` from it, once,
and drives a small private mutable :class:`Step` through it per transition with
``machine.events[name].trigger(step)``. Runs are never added to the machine as
models, so nothing is retained per run.

Speed: the stock ``Event.trigger`` of transitions does several logging calls,
``partial`` objects, an ``EventData`` and callback-list walks per trigger. The
``Event`` subclass below keeps transitions' data model and semantics (the machine
still decides whether a trigger is valid from its own table, still moves the model
to the transition's destination and still runs the source's ``on_exit`` and the
destination's ``on_enter`` callbacks) and drops the work that this machine never
needs: it has no conditions, no ``prepare``/``before``/``after`` callbacks and no
queued mode, and its callbacks take the model itself.
"""

from __future__ import annotations

import typing
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any, Literal

import attrs
from transitions import Event, Machine, MachineError, State

from runflow._model import RunStatus

__all__ = [
    "ASSISTANTS_LIFECYCLE",
    "ASSISTANTS_RUN",
    "Enter",
    "Lifecycle",
    "LifecycleProfile",
    "Step",
    "TransitionSpec",
]


@typing.final
@attrs.frozen
class TransitionSpec:
    """
    One row of the transition table: ``trigger`` moves a run from ``source`` to ``dest``.

    .. versionadded:: 0.1.0
    """

    trigger: str
    source: str
    dest: str
    grade: str = ""


@typing.final
@attrs.frozen(kw_only=True)
class Enter:
    """
    The side effects of entering a status (LIFECYCLE §8, "on entering").

    Attributes:
        stamp: Timestamp field set to *now* on entry (``started_at``…), if any.
        holds: The one field that is non-null exactly in this status
            (``required_action``, ``last_error``, ``incomplete_details``), set from the
            trigger's payload.
        ends: The status is terminal: ``expires_at`` becomes null and ``usage`` is set
            (from the payload, or the usage accumulated so far).

    .. versionadded:: 0.1.0
    """

    stamp: str | None = None
    holds: str | None = None
    ends: bool = False


@typing.final
@attrs.frozen(kw_only=True)
class LifecycleProfile:
    """
    A whole lifecycle as data: statuses, the transition table and the entry effects.

    A second profile (for example the Responses API's background mode) plugs in by
    building another instance; nothing else in runflow names a status or trigger
    outside the engine's public methods.

    .. versionadded:: 0.1.0
    """

    name: str
    initial: str
    terminal: frozenset[str]
    transitions: tuple[TransitionSpec, ...]
    enter: Mapping[str, Enter]
    #: Fields that are non-null in exactly one status, and that status (leaving the
    #: status nulls the field: its on_exit effect).
    exclusive: Mapping[str, str]

    @property
    def states(self) -> tuple[str, ...]:
        """Every status, the initial one first, in table order."""
        seen: dict[str, None] = {self.initial: None}
        for t in self.transitions:
            seen.setdefault(t.source, None)
            seen.setdefault(t.dest, None)
        return tuple(seen)

    @property
    def triggers(self) -> tuple[str, ...]:
        """Every trigger, in table order."""
        return tuple(dict.fromkeys(t.trigger for t in self.transitions))

    @property
    def effect_fields(self) -> frozenset[str]:
        """
        The fields a transition of this profile can set.

        That is ``status`` and the fields its entry effects set or clear (stamps,
        held fields, ``expires_at``, ``usage``).
        """
        fields = {"status", "expires_at", "usage", *self.exclusive}
        for effects in self.enter.values():
            fields.update(f for f in (effects.stamp, effects.holds) if f is not None)
        return frozenset(fields)


S = RunStatus

#: The Assistants API run lifecycle (LIFECYCLE §8), with T13/T14 and T10 as recommended.
ASSISTANTS_RUN = LifecycleProfile(
    name="assistants.run",
    initial=S.QUEUED,
    terminal=frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED, S.INCOMPLETE}),
    transitions=(
        TransitionSpec("start", S.QUEUED, S.IN_PROGRESS, "D"),
        TransitionSpec("cancel", S.QUEUED, S.CANCELLING, "I"),
        TransitionSpec("expire", S.QUEUED, S.EXPIRED, "D"),
        TransitionSpec("require_action", S.IN_PROGRESS, S.REQUIRES_ACTION, "D"),
        TransitionSpec("complete", S.IN_PROGRESS, S.COMPLETED, "D"),
        TransitionSpec("fail", S.IN_PROGRESS, S.FAILED, "D"),
        TransitionSpec("mark_incomplete", S.IN_PROGRESS, S.INCOMPLETE, "D/S"),
        TransitionSpec("cancel", S.IN_PROGRESS, S.CANCELLING, "D/S"),
        TransitionSpec("expire", S.IN_PROGRESS, S.EXPIRED, "D"),
        TransitionSpec("submit_tool_outputs", S.REQUIRES_ACTION, S.QUEUED, "D/S/C"),
        TransitionSpec("cancel", S.REQUIRES_ACTION, S.CANCELLING, "I"),
        TransitionSpec("expire", S.REQUIRES_ACTION, S.EXPIRED, "D"),
        TransitionSpec("finish_cancel", S.CANCELLING, S.CANCELLED, "D"),
        TransitionSpec("complete", S.CANCELLING, S.COMPLETED, "D+I"),
        TransitionSpec("fail", S.CANCELLING, S.FAILED, "D+I"),
        TransitionSpec("mark_incomplete", S.CANCELLING, S.INCOMPLETE, "D+I"),
        TransitionSpec("expire", S.CANCELLING, S.EXPIRED, "D+I"),
    ),
    enter={
        S.QUEUED: Enter(),
        S.IN_PROGRESS: Enter(stamp="started_at"),
        S.REQUIRES_ACTION: Enter(holds="required_action"),
        S.CANCELLING: Enter(),
        S.COMPLETED: Enter(stamp="completed_at", ends=True),
        S.INCOMPLETE: Enter(stamp="completed_at", holds="incomplete_details", ends=True),
        S.FAILED: Enter(stamp="failed_at", holds="last_error", ends=True),
        S.CANCELLED: Enter(stamp="cancelled_at", ends=True),
        S.EXPIRED: Enter(ends=True),
    },
    exclusive={
        "required_action": S.REQUIRES_ACTION,
        "last_error": S.FAILED,
        "incomplete_details": S.INCOMPLETE,
    },
)


class Step:
    """
    The private mutable object the machine drives for one transition.

    ``state`` is the status the machine reads and sets; ``changes`` collects the
    fields the exit and entry effects set, for the engine to build the new frozen
    record.
    """

    __slots__ = ("changes", "now", "payload", "state")

    def __init__(self, state: str, now: int, payload: Mapping[str, Any]) -> None:
        self.state = state
        self.now = now
        self.payload = payload
        self.changes: dict[str, Any] = {}


# --- slim transitions classes ------------------------------------------------------------


# A route: the destination of a trigger from one source, the source's on_exit and the
# destination's on_enter callbacks (the State objects' own lists, so a callback added
# to a state later is seen).
_Route = tuple[str, list[Any], list[Any]]


class _Event(Event):
    def __init__(self, name: str, machine: Machine) -> None:
        super().__init__(name, machine)
        self._routes: dict[str, _Route] = {}

    def add_transition(self, transition: Any) -> None:
        self.forget_routes()  # the table changed: read it again
        super().add_transition(transition)

    def forget_routes(self) -> None:
        """Read the routes off the machine again (its table or states changed)."""
        self._routes.clear()

    def trigger(self, model: Any, *args: Any, **kwargs: Any) -> bool:  # noqa: ARG002
        self.fire(model)
        return True

    def fire(self, model: Any) -> None:
        """
        The machine's own transition: move ``model`` to the destination its table
        gives for ``model.state``, running the source's ``on_exit`` and then the
        destination's ``on_enter`` callbacks.

        The table has one unconditional transition per (trigger, source), and the
        callbacks take the model itself: no EventData is built (nothing here reads
        one), and no ``*args``/``**kwargs`` are packed. The route from each source
        is read off the table once and kept until the table or the states change.
        """
        try:
            dest, leave, enter = self._routes[model.state]
        except KeyError:
            dest, leave, enter = self._route(model.state)
        for func in leave:
            func(model)
        model.state = dest
        for func in enter:
            func(model)

    def _route(self, source: str) -> _Route:
        candidates = self.transitions.get(source)
        if not candidates:
            msg = f"Can't trigger event {self.name} from state {source}!"
            raise MachineError(msg)
        dest: str = candidates[0].dest  # type: ignore[assignment] # never internal (None)
        states = self.machine.states
        route = self._routes[source] = (dest, states[source].on_exit, states[dest].on_enter)
        return route


class _Machine(Machine):
    event_cls = _Event

    def add_states(self, *args: Any, **kwargs: Any) -> None:
        super().add_states(*args, **kwargs)
        for event in self.events.values():
            event.forget_routes()  # type: ignore[attr-defined] # a state may be new

    def set_state(self, state: str | Enum | State, model: Any = None) -> None:
        # one model per call, and states are plain strings: skip listify/get_state
        model.state = state


def _effect(name: str, lines: list[str], values: dict[str, Any]) -> Callable[[Step], None]:
    """
    Compile one effect callback, ``name(step)``, whose body is ``lines``, over
    ``values`` (as attrs generates its methods): each status gets straight-line
    code for exactly its effects, with no per-transition branch on the profile.
    """
    source = f"def {name}(step):\n    changes = step.changes\n" + "".join(
        f"    {line}\n" for line in lines
    )
    namespace = dict(values)
    exec(compile(source, f"<runflow effect {name}>", "exec"), namespace)  # noqa: S102
    func: Callable[[Step], None] = namespace[name]
    return func


def entering(status: str, effects: Enter) -> Callable[[Step], None]:
    """
    The ``on_enter`` callback of ``status``: its entry effects (LIFECYCLE §3 and §8).

    It collects into ``step.changes``: the status itself; *now* in the stamp field;
    the held field from the trigger's payload; for a terminal status, null
    ``expires_at`` and the payload's ``usage``.
    """
    lines = ["changes['status'] = status"]
    if effects.stamp is not None:
        lines.append(f"changes[{effects.stamp!r}] = step.now")
    if effects.holds is not None:
        lines.append(f"changes[{effects.holds!r}] = step.payload.get({effects.holds!r})")
    if effects.ends:
        lines.append("changes['expires_at'] = None")
        lines.append("changes['usage'] = step.payload.get('usage')")
    return _effect("enter", lines, {"status": status})


def leaving(fields: Iterable[str]) -> Callable[[Step], None]:
    """
    The ``on_exit`` callback of a status that holds ``fields`` (LIFECYCLE §3: a
    held field is non-null exactly in its status): each becomes null on the way out.
    """
    return _effect("leave", [f"changes[{field!r}] = None" for field in fields], {})


@typing.final
class Lifecycle:
    """
    One shared machine for a profile: validity, reachability and the status change.

    Each status's ``on_enter`` callback is built from the profile's :class:`Enter`
    data, and the ``on_exit`` callback of a status that holds a field (the profile's
    ``exclusive``) nulls it, so the machine both moves a run and applies the effects
    of leaving its source and entering its destination.

    Attributes:
        profile: The profile the machine was built from.
        machine: The ``transitions`` machine itself (``model=None``; no run is ever
            added to it as a model).
        sources: Trigger name → the statuses it is valid from, read off the machine.
        paths: ``(from, to)`` → the shortest trigger path between two statuses,
            used to accept snapshots that skip statuses (LIFECYCLE R2.1).

    .. versionadded:: 0.1.0
    """

    def __init__(self, profile: LifecycleProfile) -> None:
        self.profile = profile

        def state(status: str) -> dict[str, Any]:
            held = [f for f, holder in profile.exclusive.items() if holder == status]
            return {
                "name": str(status),
                "on_enter": [entering(status, profile.enter[status])],
                "on_exit": [leaving(held)] if held else [],
            }

        self.machine = _Machine(
            model=None,
            states=[state(s) for s in profile.states],
            transitions=[
                {"trigger": t.trigger, "source": str(t.source), "dest": str(t.dest)}
                for t in profile.transitions
            ],
            initial=None,
            auto_transitions=False,
            send_event=True,
        )
        self._events: dict[str, _Event] = dict(self.machine.events)  # type: ignore[arg-type]
        #: trigger -> the machine's event (``events[trigger].trigger(step)`` is :meth:`fire`).
        self.events: Mapping[str, _Event] = self._events
        #: trigger -> statuses it is valid from, read off the machine's own table.
        self.sources: dict[str, frozenset[str]] = {
            name: frozenset(event.transitions) for name, event in self._events.items()
        }
        self.paths = self._shortest_paths()

    def can(self, trigger: str, status: str) -> bool:
        """Whether the machine accepts ``trigger`` from ``status``."""
        return status in self.sources.get(trigger, ())

    def fire(self, trigger: str, step: Step) -> None:
        """Let the machine perform ``trigger`` on ``step`` (raises MachineError if invalid)."""
        self._events[trigger].fire(step)

    def _edges(self) -> Iterable[tuple[str, str, str]]:
        for name, event in self._events.items():
            for source, transitions in event.transitions.items():
                for t in transitions:
                    yield source, str(t.dest), name

    def _shortest_paths(self) -> dict[tuple[str, str], tuple[str, ...]]:
        """Trigger paths between every pair of statuses (R2.1 snapshot reachability)."""
        adjacency: dict[str, list[tuple[str, str]]] = {}
        for source, dest, name in self._edges():
            adjacency.setdefault(source, []).append((dest, name))
        paths: dict[tuple[str, str], tuple[str, ...]] = {}
        for origin in self.profile.states:
            queue: deque[tuple[str, tuple[str, ...]]] = deque([(origin, ())])
            seen = {origin}
            while queue:
                here, path = queue.popleft()
                for dest, name in adjacency.get(here, ()):
                    if (origin, dest) not in paths:
                        paths[origin, dest] = (*path, name)
                    if dest not in seen:
                        seen.add(dest)
                        queue.append((dest, (*path, name)))
        return paths

    def reachable(self, source: str) -> frozenset[str]:
        """Every status a snapshot may show after ``source`` (itself excluded)."""
        return frozenset(dest for (origin, dest) in self.paths if origin == source)

    def _graph_machine(self, engine: Literal["graphviz", "mermaid"], title: str | None) -> Any:
        """A throwaway transitions GraphMachine over this profile's table, drawing."""
        from transitions.extensions.diagrams import GraphMachine  # noqa: PLC0415

        class _Model:
            pass

        model = _Model()
        GraphMachine(
            model=model,
            states=[str(s) for s in self.profile.states],
            transitions=[
                {"trigger": name, "source": source, "dest": dest}
                for source, dest, name in self._edges()
            ],
            initial=str(self.profile.initial),
            auto_transitions=False,
            graph_engine=engine,
            show_state_attributes=False,
            title=title or self.profile.name,
        )
        return model

    def mermaid(self, *, title: str | None = None) -> str:
        """
        The state diagram in Mermaid syntax, drawn by transitions' own diagram support
        from this machine's states and transitions (the initial status behind a start
        point), with the terminal statuses marked final (``status --> [*]``).
        """
        model = self._graph_machine("mermaid", title)
        source = str(model.get_graph().draw(None)).rstrip("\n")
        # a static diagram: the initial status is drawn as the others, not as the
        # throwaway model's "current" state
        initial = str(self.profile.initial)
        source = source.replace(f"Class {initial} s_active", f"Class {initial} s_default")
        # transitions marks final states only in nested diagrams; mark the terminal ones
        ends = "".join(
            f"\n  {s} --> [*]" for s in self.profile.states if s in self.profile.terminal
        )
        return f"{source}{ends}\n"

    def graphviz(self, *, title: str | None = None) -> Any:
        """
        The state diagram as a ``graphviz.Digraph``, drawn by transitions' graphviz
        support: the initial status behind a start point, terminal statuses with a
        double border.

        Raises:
            ImportError: the ``graphviz`` Python package is not installed.
        """
        import graphviz  # noqa: F401, PLC0415 - transitions' graphviz backend needs it

        graph = self._graph_machine("graphviz", title).get_graph()
        # a static diagram: the initial status is drawn as the others, not as "current"
        initial = str(self.profile.initial)
        graph.node(initial, color="black", fillcolor="white", peripheries="1")
        graph.node("__start", label="", shape="point", width="0.15")
        graph.edge("__start", initial)
        for status in sorted(self.profile.terminal):
            graph.node(str(status), peripheries="2")
        return graph


#: The one shared machine of the Assistants run lifecycle: every engine drives it.
ASSISTANTS_LIFECYCLE = Lifecycle(ASSISTANTS_RUN)
