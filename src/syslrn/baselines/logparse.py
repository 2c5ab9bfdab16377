"""Log parsing into log keys with drain3 template mining.

A log key is the template of a log message: the message with its variable
parts (ids, addresses, numbers) replaced by placeholders. The parser masks
each message with regular expressions first, then mines templates with the
Drain algorithm of the ``drain3`` package. Templates are learned by
:meth:`LogKeyParser.fit` only. :meth:`LogKeyParser.transform` matches
messages against them without changing them, and maps a message that matches
no template to :data:`UNKNOWN_KEY`, which a detector always treats as an
anomaly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from drain3 import TemplateMiner
from drain3.masking import LogMasker, MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

from syslrn.text import format_count

log = logging.getLogger(__name__)

#: Key of a message that matches no template learned in training.
UNKNOWN_KEY = "unknown"

_MASK_PREFIX = "<"
_MASK_SUFFIX = ">"

# The negative look-arounds keep a mask from cutting into a longer word, so
# that "eth0" or "md5sum" stay intact.
_START = r"(?<![A-Za-z0-9_])"
_END = r"(?![A-Za-z0-9_])"


@dataclass(frozen=True)
class Mask:
    """One masking rule: text matching ``regex`` becomes ``<name>``."""

    regex: str
    name: str = "*"


#: Masks applied after the component's own masks, in this order. Timestamps
#: come first so that their digits are not masked one number at a time.
DEFAULT_MASKS: tuple[Mask, ...] = (
    Mask(
        r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?",
        "TIME",
    ),
    Mask(r"\b[A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2}\b", "TIME"),
    Mask(r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b", "TIME"),
    Mask(
        _START
        + r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
        + _END,
        "UUID",
    ),
    Mask(_START + r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?" + _END, "IP"),
    Mask(r"(?<![\w:.])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{1,4}(?![\w:.])", "IP"),
    Mask(_START + r"0x[0-9a-fA-F]+" + _END, "HEX"),
    # Hexadecimal identifiers such as queue ids and digests: at least six
    # characters with both a digit and a letter among them.
    Mask(
        _START + r"(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,}" + _END,
        "HEX",
    ),
    Mask(_START + r"[-+]?\d+(?:\.\d+)?" + _END, "NUM"),
)


def parse_masks(specs: Iterable[str | Mapping[str, str]]) -> list[Mask]:
    """Build masks from a campaign's ``masks`` list.

    Parameters
    ----------
    specs : iterable of str or mapping
        Each entry is either a regular expression, masked as ``<*>``, or a
        mapping in drain3's own form, ``{"regex_pattern": ..., "mask_with": ...}``.

    Returns
    -------
    list of Mask
    """
    masks = []
    for spec in specs:
        if isinstance(spec, str):
            masks.append(Mask(spec))
        elif isinstance(spec, Mapping) and "regex_pattern" in spec:
            masks.append(
                Mask(str(spec["regex_pattern"]), str(spec.get("mask_with", "*")))
            )
        else:
            raise ValueError(
                f"invalid mask {spec!r}: expected a regular expression or "
                '{"regex_pattern": ..., "mask_with": ...}'
            )
    return masks


class LogKeyParser:
    """Map log messages to log keys with masking and Drain template mining.

    Parameters
    ----------
    masks : sequence of Mask
        The component's own masks, applied before :data:`DEFAULT_MASKS`.
    default_masks : bool
        Whether to apply :data:`DEFAULT_MASKS` after ``masks``.
    similarity : float
        Drain's similarity threshold: the minimum fraction of equal tokens for
        a message to join an existing template.
    depth : int
        Depth of Drain's prefix tree (drain3's default is 4).

    Attributes
    ----------
    templates_ : dict of str to str
        Template of each learned key, for example ``{"E1": "client=<IP>"}``.
    """

    def __init__(
        self,
        masks: Sequence[Mask] = (),
        *,
        default_masks: bool = True,
        similarity: float = 0.4,
        depth: int = 4,
    ):
        self.masks = tuple(masks)
        self.default_masks = default_masks
        self.similarity = similarity
        self.depth = depth
        rules = list(self.masks) + (list(DEFAULT_MASKS) if default_masks else [])
        self._masker = LogMasker(
            [MaskingInstruction(rule.regex, rule.name) for rule in rules],
            _MASK_PREFIX,
            _MASK_SUFFIX,
        )
        self._miner: TemplateMiner | None = None
        self._cache: dict[str, str] = {}

    def mask(self, message: str) -> str:
        """Return ``message`` with every mask applied."""
        return self._masker.mask(message)

    def fit(self, messages: Iterable[str], *, masked: bool = False) -> LogKeyParser:
        """Learn templates from training messages.

        Each distinct masked message is mined once, in order of first
        appearance. A repeat of a message only adds to the size of the
        template it matched before, so repeats do not change the templates.

        Parameters
        ----------
        messages : iterable of str
            Training log messages.
        masked : bool
            True when the messages went through :meth:`mask` already.

        Returns
        -------
        self
        """
        config = TemplateMinerConfig()
        config.drain_sim_th = self.similarity
        config.drain_depth = self.depth
        config.mask_prefix = _MASK_PREFIX
        config.mask_suffix = _MASK_SUFFIX
        # Masking happens in mask(), so that callers can mask once and fit
        # many parsers; drain3 gets the masked text.
        config.masking_instructions = []
        miner = TemplateMiner(config=config)

        distinct = dict.fromkeys(messages if masked else map(self.mask, messages))
        for message in distinct:
            miner.add_log_message(message)

        self._miner = miner
        self._cache = {}
        self.templates_ = {
            _key(cluster.cluster_id): cluster.get_template()
            for cluster in miner.drain.clusters
        }
        log.debug(
            "mined %s from %s",
            format_count(len(self.templates_), "template"),
            format_count(len(distinct), "distinct message"),
        )
        return self

    def transform(self, messages: Iterable[str], *, masked: bool = False) -> list[str]:
        """Map messages to the keys of the learned templates.

        A message that matches no learned template exactly (every token equal
        or under a wildcard) becomes :data:`UNKNOWN_KEY`. No template changes.

        Parameters
        ----------
        messages : iterable of str
        masked : bool
            True when the messages went through :meth:`mask` already.

        Returns
        -------
        list of str
        """
        if self._miner is None:
            raise RuntimeError("LogKeyParser.transform called before fit")
        keys = []
        for message in messages:
            text = message if masked else self.mask(message)
            key = self._cache.get(text)
            if key is None:
                cluster = self._miner.match(text, full_search_strategy="fallback")
                key = UNKNOWN_KEY if cluster is None else _key(cluster.cluster_id)
                self._cache[text] = key
            keys.append(key)
        return keys


def _key(cluster_id: int) -> str:
    return f"E{cluster_id}"
