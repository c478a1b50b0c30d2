"""What apply and revert report: an :class:`Outcome` a migration, for the CLI's progress line
and ``--json``, and what a dry run would do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

WOULD_APPLY = "would apply"
# What a --group dry run says of a migration that would commit on its own.
ALONE = "alone"


@dataclass(frozen=True)
class Outcome:
    """What one apply or revert did, for the CLI's progress line and --json."""

    id: str
    name: str
    action: str
    seconds: float = 0.0
    steps: tuple[str, ...] = field(default_factory=tuple)
    # A dry run with --group: the transaction it would commit in, as "031-130", or "alone", and why.
    group: str | None = None
    alone_because: str | None = None

    def as_dict(self) -> dict[str, object]:
        found: dict[str, object] = {"id": self.id, "name": self.name, "action": self.action,
                                    "seconds": round(self.seconds, 3), "steps": list(self.steps)}
        if self.group is not None:
            found["group"] = self.group
        if self.alone_because is not None:
            found["alone_because"] = self.alone_because
        return found

    def line(self) -> str:
        """``027 memberships: applied in 0.12 s``, or what a dry run would do."""
        if self.action == WOULD_APPLY:
            within = "" if self.group is None else f" [group {self.group}]"
            if self.group == ALONE:
                within = f" [alone: {self.alone_because}]" if self.alone_because else " [alone]"
            return f"{self.id} {self.name}: {self.action} (steps: {', '.join(self.steps)}){within}"
        return f"{self.id} {self.name}: {self.action} in {self.seconds:.2f} s"


# Called with each migration's outcome as soon as it is applied, so a person sees progress.
Progress = Callable[[Outcome], None]
