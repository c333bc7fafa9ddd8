"""Entity linking: mentions in context linked to a knowledge base by a bi-encoder (BET/BLINK style)."""

from retrievekit.linking.abbreviations import abbreviation_definitions, expand_abbreviations
from retrievekit.linking.evaluate import (
    PROTOCOLS,
    LinkingEvaluation,
    biosyn_dev_dictionary,
    evaluate_linking,
    score_biosyn_predictions,
)
from retrievekit.linking.lexical import CharNgramScorer
from retrievekit.linking.linker import EntityIndex, EntityLinker, Linked
from retrievekit.linking.metrics import LinkingMetrics, gold_ids, linking_metrics, part_rank, query_rank
from retrievekit.linking.readers import read_documents, read_entities, read_mentions, read_names
from retrievekit.linking.records import Entity, Mention, Name
from retrievekit.linking.text import LinkingFormat, add_markers

__all__ = [
    "PROTOCOLS",
    "CharNgramScorer",
    "Entity",
    "EntityIndex",
    "EntityLinker",
    "Linked",
    "LinkingEvaluation",
    "LinkingFormat",
    "LinkingMetrics",
    "Mention",
    "Name",
    "abbreviation_definitions",
    "add_markers",
    "biosyn_dev_dictionary",
    "evaluate_linking",
    "expand_abbreviations",
    "gold_ids",
    "linking_metrics",
    "part_rank",
    "query_rank",
    "read_documents",
    "read_entities",
    "read_mentions",
    "read_names",
    "score_biosyn_predictions",
]
