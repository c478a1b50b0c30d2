"""The Pulumi Python SDK at the size of a real history: two of its steps made cheaper, and its
record of each resource made smaller.

The migration commands are a chain, each depending on the one before (components/migrations.py),
so that Pulumi deletes them newest first. The SDK registers such a chain one resource after
another, and two of its steps cost more the longer the chain is (issue 20; measured on the real
engine, a no-op ``pulumi preview`` took 2 s at 104 migrations, 18.6 s at 304 and 43.7 s at 504):

- **Its dependency-cycle check** (``pulumi.runtime.resource_cycle_breaker``). Before a resource
  is registered, the SDK asks whether it is reachable from each of its dependencies, through
  every dependency declared so far. Its walk is a recursive generator, ``yield from`` at each
  level: the check for the k-th command goes k levels deep and each resource it finds climbs
  back through all of them, about k²/2 steps, a chain of n about n³/6 (104: 43 to 73 ms; 504:
  about 6 s). Past about 990 migrations the recursion exceeds Python's limit, and the program
  stopped with a RecursionError on every preview and up. :func:`_reachable` asks the same with
  a stack: each check visits each resource once, a chain of n about n²/2 visits in all (1,000:
  about 0.5 s; 2,000: 1.7 s).
- **Its wait for the program's work** (``pulumi.runtime.stack.wait_for_rpcs``). When the
  program's code has run, the SDK waits for its registrations, then for every pending output.
  It looks at the registrations before any of them has begun (each begins on the event loop's
  next turn), finds none, and waits on the outputs instead, one at a time: ``asyncio.wait(...,
  FIRST_COMPLETED)`` over every pending output (over 7,000 at 304 migrations) each time one
  completes, while the chain registers one resource after another (999 such waits, 2.9 million
  callbacks). :func:`_wait_for_rpcs` lets the registrations begin first, by one turn of the
  event loop, and then runs the SDK's own wait, which now awaits the chain's registrations one
  by one and finds the outputs done: a no-op preview at 304 took 6.7 s instead of 18.1 s.

- **The stack trace it sends with each resource** (``pulumi.runtime.resource._get_stack_trace``).
  The engine keeps it in the state, and each step of a deploy writes the whole state again (a
  rollback or a destroy writes it once a migration). Every frame from the line that made the
  resource down to the language host's: thirteen for a migration's command, a third of its
  record, with the paths of the deployer's Python, virtualenv and Pulumi CLI (at 104
  migrations, a state of 404 KB; 279 KB without them). The trace made by :func:`smaller_state`'s
  function stops at the program's own line (``__main__.py``'s), the frames that say how the
  program came to make the resource: one for a resource ``__main__.py`` makes, two for a
  migration's command (``components/migrations.py``, then ``__main__.py``), four for the
  postgresql provider, whose first two are its package's. Its first frame, from which the SDK
  takes the source position Pulumi shows, is the SDK's. The ``pulumi:pulumi:Stack`` resource,
  which the SDK registers before the program runs, keeps its whole trace. ``__main__.py`` asks
  for this before it makes its first resource; ``Migrations`` asks for the other two
  (:func:`for_a_long_chain`).

All three replace private functions of the SDK, which a program's run looks up by name in their
modules on every call (``declare_dependency`` its ``_reachable``, ``run_pulumi_func`` its
``wait_for_rpcs``, ``register_resource`` and ``read_resource`` their ``_get_stack_trace``; a
provider's server, which imports ``wait_for_rpcs`` itself, keeps the SDK's).
``tests/test_pulumi_program.py`` checks that the pinned SDK (requirements.lock) still calls them
so, that a program's run puts these in their place, that :func:`_reachable` answers as the SDK's
on random graphs and still refuses a cycle, that a chain's registrations no longer wait one
output at a time, and that each resource's trace is the SDK's, down to the program's line.
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import TYPE_CHECKING, Any

from pulumi.runtime import resource, resource_cycle_breaker, stack

if TYPE_CHECKING:
    from collections.abc import Callable

    import pulumi
    from pulumi.runtime.proto import source_pb2

# The SDK's own, even where an earlier import of this module (a test's copy of the project) replaced them.
_SDK_REACHABLE = getattr(resource_cycle_breaker._reachable, "sdk_original", resource_cycle_breaker._reachable)
_SDK_WAIT_FOR_RPCS = getattr(stack.wait_for_rpcs, "sdk_original", stack.wait_for_rpcs)
_SDK_STACK_TRACE = getattr(resource._get_stack_trace, "sdk_original", resource._get_stack_trace)


def _reachable(from_resource: pulumi.Resource, to_resource: pulumi.Resource) -> bool:
    """Whether ``to_resource`` is ``from_resource`` or among its dependencies, transitively, as
    the SDK has recorded them (``resource_cycle_breaker._deps``): the SDK's question, asked with a
    stack instead of recursion."""
    seen: set[pulumi.Resource] = set()
    pending = [from_resource]
    while pending:
        resource = pending.pop()
        if resource in seen:
            continue
        if resource == to_resource:
            return True
        seen.add(resource)
        pending.extend(resource_cycle_breaker._deps(resource))
    return False


_reachable.sdk_original = _SDK_REACHABLE  # type: ignore[attr-defined]


async def _wait_for_rpcs(*args: Any, **kwargs: Any) -> None:
    """The SDK's wait, after one turn of the event loop: every registration the program made
    has then begun, and is awaited as one, instead of through its outputs. (Whatever arguments
    the SDK passes, passed on.)"""
    await asyncio.sleep(0)
    await _SDK_WAIT_FOR_RPCS(*args, **kwargs)


_wait_for_rpcs.sdk_original = _SDK_WAIT_FOR_RPCS  # type: ignore[attr-defined]


def _down_to(program: str) -> Callable[[], source_pb2.StackTrace]:
    """The SDK's stack trace of a resource being made, cut below the last frame in ``program``
    (a file's URI, as the SDK writes them), or below its first frame where none is. The frames
    below are the SDK's, asyncio's and the language host's: the same for every resource, bytes
    in every write of the state, and folders of the machine that deployed."""

    def stack_trace() -> source_pb2.StackTrace:
        trace = _SDK_STACK_TRACE()
        ours = [index for index, frame in enumerate(trace.frames) if program and frame.pc.uri == program]
        del trace.frames[max(ours, default=0) + 1:]
        return trace

    stack_trace.sdk_original = _SDK_STACK_TRACE  # type: ignore[attr-defined]
    return stack_trace


def for_a_long_chain() -> None:
    """Have the SDK use :func:`_reachable` and :func:`_wait_for_rpcs` (idempotent)."""
    resource_cycle_breaker._reachable = _reachable
    stack.wait_for_rpcs = _wait_for_rpcs


def smaller_state(program: str) -> None:
    """Have the SDK send, with every resource made from now on, its stack trace down to the line
    of ``program`` (the program's ``__file__``) that made it (:func:`_down_to`)."""
    try:
        uri = pathlib.Path(program).as_uri()  # as the SDK makes a frame's (a relative path has none)
    except ValueError:
        uri = ""
    resource._get_stack_trace = _down_to(uri)
