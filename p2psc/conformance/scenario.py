"""What a conformance scenario is: a name, the spec section it checks, how binding it is, a body.

Why sections are data (document, number, heading) rather than free text: the report links each
scenario to its section (``spec/mediator.md#4-pairing-and-the-ordering-guarantee``), and a test
checks that every heading named here really exists in ``spec/``, so a renumbered spec cannot
leave the harness pointing at the wrong rule.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from p2psc.conformance.context import HarnessOptions, ScenarioContext

__all__ = ["Level", "Scenario", "Section", "github_anchor"]


class Level(StrEnum):
    """How binding a scenario is; decides whether its failure fails the run."""

    REQUIRED = "required"
    """Checks a MUST of the spec: a failure fails the run (exit status 1)."""
    RECOMMENDED = "recommended"
    """Checks a SHOULD, a reason code, or a deadline whose value the harness must be told: a
    failure is reported as a warning and does not fail the run."""


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading: lower case, punctuation
    other than ``-`` and ``_`` dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@dataclass(frozen=True, slots=True)
class Section:
    """A numbered section of a document in ``spec/``."""

    document: str
    """File name inside ``spec/``, e.g. ``mediator.md``."""
    number: str
    """Section number as printed, e.g. ``4`` or ``1.1``."""
    title: str
    """Heading text after the number, exactly as in the document."""

    @property
    def heading(self) -> str:
        """The heading as written: ``4. Pairing ...`` for top-level, ``1.1 What ...`` below."""
        sep = ". " if "." not in self.number else " "
        return f"{self.number}{sep}{self.title}"

    @property
    def link(self) -> str:
        """``spec/mediator.md#4-pairing-and-the-ordering-guarantee``."""
        return f"spec/{self.document}#{github_anchor(self.heading)}"

    @property
    def short(self) -> str:
        """``spec/mediator.md §4``."""
        return f"spec/{self.document} §{self.number}"


ScenarioBody = Callable[["ScenarioContext"], Awaitable[None]]
"""A scenario's body: drives raw peers through the context; raises ScenarioFailed on a
violation, returns normally when the mediator behaved."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """One independent check of a mediator, run with fresh keys and its own connections."""

    name: str
    """Stable identifier, kebab-case, grouped by prefix (``pairing-``, ``framing-``, ...)."""
    section: Section
    level: Level
    summary: str
    """One line: what the mediator must do for this scenario to pass."""
    body: ScenarioBody
    protocol: str = "v1"
    """``v1`` (always run) or ``v0`` (only with ``--legacy``)."""
    rsa_keys: int = 0
    """How many RSA keypairs the body takes from the pool (version 0 scenarios)."""
    skip_unless: Callable[[HarnessOptions], str | None] | None = None
    """Returns why the scenario cannot run with these options (None: it can)."""
    long: bool = False
    """Waits for a mediator deadline; started first so that it overlaps the quick ones."""

    @property
    def legacy(self) -> bool:
        return self.protocol == "v0"
