"""Tree and thread filters. Each returns None to keep, or the reason it drops.

Reference semantics (Open-Assistant's SFT loader) come first; the rest are opt-in. Thread
filters see the whole candidate path, before a trailing prompter is trimmed, as the
reference does.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import ConfigError
from .records import ExportMessage, ExportMessageTree

log = logging.getLogger(__name__)

REFERENCE_LANGS = "bg,ca,cs,da,de,en,es,fr,hr,hu,it,nl,pl,pt,ro,ru,sl,sr,sv,uk"
ANY = "*"


class SyntheticPolicy(str, enum.Enum):
    EXCLUDE = "exclude"  # drop a thread if any message is synthetic (the reference)
    INCLUDE = "include"  # keep synthetic messages
    ONLY = "only"  # keep only threads with at least one synthetic message


class LangScope(str, enum.Enum):
    ROOT = "root"  # the root prompt's lang must be listed (the reference)
    ALL = "all"  # additionally, every message of the thread must have a listed lang


class TreeFilter:
    """Decides on a whole tree before any thread is extracted."""

    name: str = "tree"

    def check(self, tree: ExportMessageTree) -> str | None:
        raise NotImplementedError


class ThreadFilter:
    """Decides on one candidate path (root first, untrimmed)."""

    name: str = "thread"

    def check(self, path: Sequence[ExportMessage]) -> str | None:
        raise NotImplementedError


@dataclass(frozen=True)
class TreeStateFilter(TreeFilter):
    states: frozenset[str]
    name = "tree_state"

    def check(self, tree):
        if ANY in self.states or tree.tree_state in self.states:
            return None
        # Records without the field (some thread and message exports) get a reason of their own,
        # so a run that drops them all says why.
        return "tree_state" if tree.tree_state is not None else "tree_state_missing"


class RootReviewFilter(TreeFilter):
    name = "review_result"

    def check(self, tree):
        return None if tree.prompt.review_result else "review_result"


@dataclass
class RootLangFilter(TreeFilter):
    """Codes match exactly (`EN` is not `en`, nor `en-US` `en`), as Open-Assistant's loader matches
    them; the trees it drops are counted by their root's code, so a code that matched nothing can
    be told apart from a typo or another spelling of it (`unmatched_hint`)."""

    langs: frozenset[str]
    name = "lang"
    met: set[str] = field(default_factory=set, compare=False)
    dropped: dict[str | None, int] = field(default_factory=dict, compare=False)

    def check(self, tree):
        lang = tree.prompt.lang
        if ANY in self.langs or lang in self.langs:
            self.met.add(lang)
            return None
        if lang in self.dropped or len(self.dropped) < _MAX_DROPPED_LANGS:
            self.dropped[lang] = self.dropped.get(lang, 0) + 1
        return "lang"

    def warn_about_unmatched_codes(self) -> None:
        """A code no root had, when the dropped roots have one like it (`EN`, `en-US`, ` en` for
        `en`): codes match exactly. When no code matched at all, the codes the roots have."""
        if ANY in self.langs or not self.dropped:
            return
        unmatched = sorted(self.langs - self.met)
        warned = False
        for code in unmatched:
            alike = [lang for lang in self.dropped if lang is not None and _lang_base(lang) == _lang_base(code)]
            if alike:
                warned = True
                log.warning("--lang %s: no tree's root prompt has this code; codes match exactly, and the trees dropped under `lang` have %s", code, self._most_dropped(alike))
        if not warned and len(unmatched) == len(self.langs):
            log.warning("--lang %s: no tree's root prompt has any of these codes; the trees dropped under `lang` have %s", ",".join(unmatched), self._most_dropped(self.dropped))

    def _most_dropped(self, langs) -> str:
        top = sorted(langs, key=lambda lang: (-self.dropped[lang], str(lang)))
        shown = ", ".join(f"{lang!r} ({self.dropped[lang]:,} tree{'s' if self.dropped[lang] != 1 else ''})" for lang in top[:5])
        return shown + (f" and {len(top) - 5:,} more" if len(top) > 5 else "")


def _lang_base(code: str) -> str:
    """`en` of `EN`, ` en`, `en-US`, `en_GB`: what a code that was meant alike has in common."""
    return code.strip().lower().replace("_", "-").split("-")[0]


# Distinct root codes counted as dropped: a real export has a few dozen; bounded for odd data.
_MAX_DROPPED_LANGS = 10_000


class DeletedFilter(ThreadFilter):
    name = "deleted"

    def check(self, path):
        for message in path:  # a plain loop: paths are short, and this runs for every candidate
            if message.deleted:
                return "deleted"
        return None


@dataclass(frozen=True)
class SyntheticFilter(ThreadFilter):
    policy: SyntheticPolicy
    name = "synthetic"

    def check(self, path):
        has_synthetic = False
        for message in path:
            if message.synthetic:
                has_synthetic = True
                break
        if self.policy is SyntheticPolicy.EXCLUDE and has_synthetic:
            return "synthetic"
        if self.policy is SyntheticPolicy.ONLY and not has_synthetic:
            return "not_synthetic"
        return None


@dataclass(frozen=True)
class TopKFilter(ThreadFilter):
    """Every assistant must rank below k, or be unranked with no siblings (the reference)."""

    k: int
    name = "top_k"

    def check(self, path):
        for index, message in enumerate(path):
            if message.role != "assistant":
                continue
            if message.rank is None:
                if index > 0 and len(path[index - 1].replies or ()) > 1:
                    return "top_k_unranked"
            elif message.rank >= self.k:
                return "top_k"
        return None


@dataclass(frozen=True)
class AllLangFilter(ThreadFilter):
    langs: frozenset[str]
    name = "lang_all"

    def check(self, path):
        if ANY in self.langs:
            return None
        return None if all(m.lang in self.langs for m in path) else "lang_all"


@dataclass
class LabelThreshold(ThreadFilter):
    """Drop the thread when a message's mean label value is above max (or below min).

    A message without that label, or with no value for it, passes.
    """

    label: str
    bound: float
    is_max: bool
    # Whether a message checked had this label with a value. One that never did kept every
    # thread: exports without labels (the en_100 sample) or a label name no export uses.
    met: bool = field(default=False, compare=False)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{'max' if self.is_max else 'min'}_label:{self.label}"

    @property
    def option(self) -> str:
        return f"{'--max-label' if self.is_max else '--min-label'} {self.label}={self.bound:g}"

    def check(self, path):
        for message in path:
            labels = message.labels
            if not labels:
                continue
            entry = labels.get(self.label)
            if entry is None or entry.value is None:
                continue
            self.met = True
            if (entry.value > self.bound) if self.is_max else (entry.value < self.bound):
                return self.name
        return None


def parse_langs(value: str | Sequence[str], option: str = "--lang", what: str = "language code") -> frozenset[str]:
    """A comma-separated list (or a sequence) of codes; '*' stands for any."""
    items = value.split(",") if isinstance(value, str) else list(value)
    langs = frozenset(item.strip() for item in items if item.strip())
    if not langs:
        raise ConfigError(f"{option} needs at least one {what} (or '*')")
    return langs


def parse_label_thresholds(items: Sequence[str], is_max: bool) -> list[LabelThreshold]:
    """Parse `name=value` pairs such as `spam=0.5`."""
    thresholds = []
    for item in items:
        name, sep, value = item.partition("=")
        try:
            bound = float(value)
        except ValueError:
            bound = None
        flag = "--max-label" if is_max else "--min-label"
        if not sep or not name.strip() or bound is None or not math.isfinite(bound):  # nan would keep everything
            raise ConfigError(f"{flag} expects NAME=NUMBER (e.g. spam=0.5), got {item!r}")
        if not 0 <= bound <= 1:  # outside, a threshold drops every labelled message's thread, or none
            raise ConfigError(f"{flag} {item}: label values are means of 0-1 votes, so the threshold must lie in [0, 1]")
        thresholds.append(LabelThreshold(name.strip(), bound, is_max))
    return thresholds


def warn_about_unknown_labels(thread_filters: Sequence[ThreadFilter]) -> None:
    """A typo in a label name would filter nothing (a new export's label is fine, so a warning)."""
    for unknown in (f for f in thread_filters if isinstance(f, LabelThreshold) and f.label not in OASST_LABELS):
        log.warning("%s: %r is not one of Open-Assistant's labels (%s)", unknown.option, unknown.label, ", ".join(sorted(OASST_LABELS)))


# The label names of Open-Assistant's exports (oasst1/oasst2 message "labels").
OASST_LABELS = frozenset({
    "spam", "fails_task", "pii", "not_appropriate", "hate_speech", "sexual_content", "quality", "toxicity",
    "humor", "helpfulness", "creativity", "violence", "lang_mismatch", "moral_judgement", "political_content",
})


@dataclass(frozen=True)
class FilterSpec:
    """One entry of the filter registry: what it checks, which option sets it, its drop reasons."""

    name: str
    level: str  # "tree" or "thread"
    option: str
    reasons: tuple[str, ...]
    reference: bool  # part of Open-Assistant's own SFT loader
    summary: str
    make: object  # Callable[[ThreadConfig], list[TreeFilter | ThreadFilter]]; [] when not enabled


def _langs(config) -> frozenset[str]:
    return parse_langs(config.lang)


# In checking order: the first filter that drops an item names the reason it is counted under.
REGISTRY: tuple[FilterSpec, ...] = (
    FilterSpec("tree_state", "tree", "--tree-states", ("tree_state", "tree_state_missing"), True,
               "tree_state must be listed (default ready_for_export)",
               lambda c: [TreeStateFilter(parse_langs(c.tree_states, "--tree-states", "tree state"))]),
    FilterSpec("review_result", "tree", "(always)", ("review_result",), True,
               "the root prompt's review_result must be true",
               lambda c: [RootReviewFilter()]),
    FilterSpec("lang", "tree", "--lang", ("lang",), True,
               "the root prompt's lang must be listed",
               lambda c: [RootLangFilter(_langs(c))]),
    FilterSpec("deleted", "thread", "(always)", ("deleted",), True,
               "no message of the path (trailing prompter included) is deleted",
               lambda c: [DeletedFilter()]),
    FilterSpec("synthetic", "thread", "--synthetic", ("synthetic", "not_synthetic"), True,
               "exclude / include / only paths with a synthetic message",
               lambda c: [SyntheticFilter(c.synthetic)]),
    FilterSpec("top_k", "thread", "--top-k", ("top_k", "top_k_unranked"), True,
               "every assistant has rank < K, or no rank and no siblings",
               lambda c: [TopKFilter(c.top_k)] if c.top_k is not None else []),
    FilterSpec("lang_all", "thread", "--lang-scope all", ("lang_all",), False,
               "every message's lang is listed",
               lambda c: [AllLangFilter(_langs(c))] if c.lang_scope is LangScope.ALL else []),
    FilterSpec("max_label", "thread", "--max-label NAME=V", ("max_label:NAME",), False,
               "no message has label NAME above V (unlabelled messages pass)",
               lambda c: parse_label_thresholds(c.max_label, is_max=True)),
    FilterSpec("min_label", "thread", "--min-label NAME=V", ("min_label:NAME",), False,
               "no message has label NAME below V (unlabelled messages pass)",
               lambda c: parse_label_thresholds(c.min_label, is_max=False)),
)


@dataclass(frozen=True)
class OtherDropReason:
    """A drop the funnel counts that no selection option controls."""

    reason: str
    level: str
    summary: str


# The rest of the funnel's reasons, so `oasst-data filters` explains every one it can print.
OTHER_DROP_REASONS: tuple[OtherDropReason, ...] = (
    OtherDropReason("duplicate_tree", "tree", "a tree id read before (overlapping inputs); a bad record: the first copy is kept"),
    OtherDropReason("duplicate_thread", "tree", "a thread record ending at a message read before; a bad record"),
    OtherDropReason(
        "duplicate_message", "tree",
        "a message id another record held (a tree given both whole and as thread records, or one id "
        "in two trees), whatever the selection; a bad record",
    ),
    OtherDropReason(
        "duplicate_path", "thread",
        "a thread record whose thread, its trailing prompter trimmed, an earlier record gave (sibling prompter leaves)",
    ),
    OtherDropReason(
        "invalid_tree", "tree",
        "roles do not alternate from a prompter root, an id repeats, or parent_id contradicts the nesting; a bad record",
    ),
    OtherDropReason("empty_text", "Alpaca record", "a blank instruction or output (Alpaca records pass no other filter)"),
    OtherDropReason("overflow", "row (build)", "longer than --max-length with --overflow drop"),
    OtherDropReason("no trainable token", "row (build)", "no assistant token left after truncation"),
)


def build_filters(config) -> tuple[list[TreeFilter], list[ThreadFilter]]:
    """The enabled filters of `config` (a ThreadConfig), in registry order."""
    tree_filters: list[TreeFilter] = []
    thread_filters: list[ThreadFilter] = []
    for spec in REGISTRY:
        (tree_filters if spec.level == "tree" else thread_filters).extend(spec.make(config))
    return tree_filters, thread_filters
