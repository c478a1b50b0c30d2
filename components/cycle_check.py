"""The Pulumi Python SDK's dependency-cycle check, walked without recursion.

Before a resource is registered, the SDK checks each of its dependencies for a cycle
(``pulumi.runtime.resource_cycle_breaker.declare_dependency``): is the new resource reachable
from the dependency, through every dependency declared so far? Its walk is a recursive
generator, ``yield from`` at every level. The migration commands are a chain, each depending
on the one before (components/migrations.py), so the walk for the k-th goes k levels deep and
every resource it finds climbs back through all of them: the k-th check costs about k²/2 steps,
a whole chain of n about n³/6. Measured with the SDK's own functions on a chain shaped like the
program's (issue 20): 104 migrations 43 to 73 ms, 304 about 1.1 s, 504 about 6 s; and past
about 990 migrations the recursion exceeds Python's limit, so the program stopped with a
RecursionError on every preview, up and destroy.

:func:`make_linear` puts an iterative walk with the same answer in its place: each check visits
each resource once, about 5,000 steps for a chain of 100 and 500,000 for 1,000. The SDK's
``declare_dependency`` reads ``_reachable`` from its module on every call, so replacing that one
function is enough. It is private to the SDK: ``tests/test_pulumi_program.py`` checks that the
pinned SDK (requirements.lock) still has it, that the program uses this one, and that a cycle is
still refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pulumi.runtime import resource_cycle_breaker

if TYPE_CHECKING:
    import pulumi


def _reachable(from_resource: pulumi.Resource, to_resource: pulumi.Resource) -> bool:
    """Whether ``to_resource`` is ``from_resource`` or among its dependencies, transitively, as
    the SDK has recorded them (``resource_cycle_breaker._deps``): the SDK's question, asked with a
    stack instead of recursion."""
    seen: set[pulumi.Resource] = set()
    stack = [from_resource]
    while stack:
        resource = stack.pop()
        if resource in seen:
            continue
        if resource == to_resource:
            return True
        seen.add(resource)
        stack.extend(resource_cycle_breaker._deps(resource))
    return False


def make_linear() -> None:
    """Have the SDK's cycle check use :func:`_reachable` (idempotent)."""
    resource_cycle_breaker._reachable = _reachable
