"""shiwu's keywords merged into the ones a photo already has, and taken out again.

Photo tools read two XMP lists: ``dc:subject`` (flat keywords) and ``lr:hierarchicalSubject``
(Lightroom's ``parent|child`` paths, read by digiKam, darktable and immich too). shiwu writes each
label to both: ``猫`` and ``识物|猫``. The hierarchy is how shiwu recognises its own keywords later:
a flat keyword is shiwu's exactly when ``识物|<it>`` is in the hierarchy. A keyword the photo
already had before shiwu came (the user's own ``猫``) gets no ``识物|猫``, so ``--remove`` never
takes it away. JPEG's IPTC Keywords, which older tools read, follow ``dc:subject``.

Merging never reorders or duplicates what is not shiwu's: the user's keywords stay where they
are, shiwu's keywords that are still right stay where they are, new ones are appended, and
shiwu's keywords the current labels no longer include are taken out. The same labels on the
same keywords give the same keywords back, so a second run changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

ROOT = "识物"
SEPARATOR = "|"


@dataclass(frozen=True)
class Keywords:
    subject: tuple[str, ...] = ()    # XMP dc:subject
    hierarchy: tuple[str, ...] = ()  # XMP lr:hierarchicalSubject
    iptc: tuple[str, ...] | None = None  # IPTC Keywords (JPEG only; None: not written)

    def ours(self) -> list[str]:
        """The labels shiwu wrote, in hierarchy order."""
        prefix = ROOT + SEPARATOR
        return [h[len(prefix):] for h in self.hierarchy if h.startswith(prefix) and len(h) > len(prefix)]


@dataclass(frozen=True)
class Change:
    before: Keywords
    after: Keywords
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _unique(values) -> list[str]:
    return list(dict.fromkeys(values))


def merge(current: Keywords, labels: list[str]) -> Change:
    """``current`` with shiwu's keywords made exactly ``labels`` (best first)."""
    owned = set(current.ours())
    users = set(current.subject) - owned
    wanted = [label for label in _unique(labels) if label and label not in users]
    return _rewrite(current, owned, wanted)


def remove(current: Keywords) -> Change:
    """``current`` without shiwu's keywords; everything else as it was."""
    return _rewrite(current, set(current.ours()), [])


def _rewrite(current: Keywords, owned: set[str], wanted: list[str]) -> Change:
    keep = set(wanted)
    prefix = ROOT + SEPARATOR

    def flat(values: tuple[str, ...]) -> tuple[str, ...]:
        kept = [v for v in values if v not in owned or v in keep]
        return tuple(_unique(kept + [w for w in wanted if w not in kept]))

    hierarchy = [h for h in current.hierarchy
                 if not h.startswith(prefix) or h[len(prefix):] in keep]
    hierarchy += [prefix + w for w in wanted if prefix + w not in hierarchy]
    after = replace(current, subject=flat(current.subject), hierarchy=tuple(_unique(hierarchy)),
                    iptc=None if current.iptc is None else flat(current.iptc))
    return Change(current, after, added=[w for w in wanted if w not in owned],
                  removed=sorted(owned - keep, key=current.ours().index))
