"""The Pulumi Python SDK at the size of a real history: two of its steps, made cheaper.

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

Both replace private functions of the SDK, which a program's run looks up by name in their
modules on every call (``declare_dependency`` its ``_reachable``, ``run_pulumi_func`` its
``wait_for_rpcs``; a provider's server, which imports ``wait_for_rpcs`` itself, keeps the SDK's).
``tests/test_pulumi_program.py`` checks that the pinned SDK (requirements.lock) still calls them
so, that a program's run puts these in their place, that :func:`_reachable` answers as the SDK's
on random graphs and still refuses a cycle, and that a chain's registrations no longer wait one
output at a time.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pulumi.runtime import resource_cycle_breaker, stack

if TYPE_CHECKING:
    import pulumi

# The SDK's own, even where an earlier import of this module (a test's copy of the project) replaced them.
_SDK_REACHABLE = getattr(resource_cycle_breaker._reachable, "sdk_original", resource_cycle_breaker._reachable)
_SDK_WAIT_FOR_RPCS = getattr(stack.wait_for_rpcs, "sdk_original", stack.wait_for_rpcs)


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


def for_a_long_chain() -> None:
    """Have the SDK use :func:`_reachable` and :func:`_wait_for_rpcs` (idempotent)."""
    resource_cycle_breaker._reachable = _reachable
    stack.wait_for_rpcs = _wait_for_rpcs
