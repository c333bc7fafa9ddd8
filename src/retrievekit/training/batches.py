"""From training examples to tensors: a resumable batch sampler (each batch from one dataset), the
per-example sampling of one positive and ``k`` negatives, and the collator that tokenizes.

Everything random is drawn from generators seeded by ``(seed, epoch, batch)``, so a batch is the
same whenever it is built: after a resume, on another rank, or in another process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from retrievekit.errors import ConfigError
from retrievekit.models.encoding import TokenLayout, pad_batch, tokenize_with_layout
from retrievekit.training.data import TrainingExample

__all__ = [
    "DatasetBatchSampler",
    "SampledExample",
    "TrainingBatch",
    "TrainingCollator",
    "TrainingLoader",
    "TrainingSet",
    "text_hash",
]

# a batch key: (dataset index, example index, seed of this example's sampling)
Key = tuple[int, int, int]


def text_hash(text: str) -> int:
    """A stable 63-bit hash of a text (the same in every process, unlike ``hash()``).

    >>> text_hash("a") == text_hash("a") and text_hash("a") != text_hash("b")
    True
    """
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


class DatasetBatchSampler:
    """Yields batches of keys; every batch draws from one dataset only (FlagEmbedding's same-dataset
    batches), datasets interleaved at random. Deterministic for a given ``(seed, epoch)``.

    With ``world_size > 1`` each rank takes every ``world_size``-th batch and all ranks get the same
    number of full batches. :meth:`state_dict` is the position training has reached (set by
    :meth:`mark_trained`), and :meth:`load_state_dict` makes the next pass skip the trained batches.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        *,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if not sizes or min(sizes) < 1:
            raise ConfigError("every training dataset needs at least one example")
        self.sizes = list(sizes)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last or world_size > 1  # ranks must hold equal batches to gather negatives
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._trained = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0
            self._trained = 0
        self.epoch = epoch

    def _all_batches(self, epoch: int) -> list[list[Key]]:
        rng = np.random.default_rng([self.seed, epoch])
        batches: list[list[tuple[int, int]]] = []
        for dataset, size in enumerate(self.sizes):
            order = rng.permutation(size)
            for start in range(0, size, self.batch_size):
                chunk = order[start : start + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append([(dataset, int(i)) for i in chunk])
        batches = [batches[i] for i in rng.permutation(len(batches))]
        keyed = []
        for number, batch in enumerate(batches):
            seeds = np.random.default_rng([self.seed, epoch, number]).integers(0, 2**31, size=len(batch))
            keyed.append([(d, i, int(s)) for (d, i), s in zip(batch, seeds, strict=True)])
        per_rank = len(keyed) // self.world_size if self.world_size > 1 else len(keyed)
        return keyed[self.rank :: self.world_size][:per_rank]

    def __len__(self) -> int:
        full = sum(size // self.batch_size for size in self.sizes)
        partial = 0 if self.drop_last else sum(1 for size in self.sizes if size % self.batch_size)
        return (full + partial) // self.world_size

    def __iter__(self) -> Iterator[list[Key]]:
        batches = self._all_batches(self.epoch)
        skip, self._skip = self._skip, 0
        yield from batches[skip:]

    def mark_trained(self, epoch: int, batches_done: int) -> None:
        """Record that training has consumed ``batches_done`` batches of ``epoch``."""
        self.epoch, self._trained = epoch, batches_done

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_done": self._trained, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ConfigError(f"the checkpoint was trained with seed {state['seed']}, this run has seed {self.seed}")
        self.epoch = int(state["epoch"])
        self._trained = self._skip = int(state["batches_done"])


@dataclass(frozen=True)
class SampledExample:
    """One example as it enters a batch: the query, one positive, ``k`` negatives, teacher scores
    for those ``1 + k`` texts (or None), the hashes of all the query's positives, and further
    positives drawn for a marginal loss (``positives_per_query`` above 1)."""

    query: str
    prompt: str | None
    positive: str
    negatives: tuple[str, ...]
    teacher_scores: tuple[float, ...] | None
    positive_hashes: tuple[int, ...]
    further_positives: tuple[str, ...] = ()


class TrainingSet(Dataset):
    """Named lists of examples, indexed by the keys of :class:`DatasetBatchSampler`.

    An example with fewer hard negatives than ``num_negatives`` repeats them; one with none gets
    positives of other examples of its dataset (random negatives), as FlagEmbedding does.
    ``positives_per_query``: positives drawn per query, distinct, as many as it has up to this
    number (several names of one concept, for a marginal loss); the first is the usual positive.
    """

    def __init__(
        self, datasets: dict[str, list[TrainingExample]], num_negatives: int = 0, positives_per_query: int = 1
    ) -> None:
        if not datasets:
            raise ConfigError("no training data given")
        if positives_per_query < 1:
            raise ConfigError(f"positives_per_query must be at least 1, got {positives_per_query}")
        self.names = list(datasets)
        self.datasets = [datasets[name] for name in self.names]
        self.num_negatives = num_negatives
        self.positives_per_query = positives_per_query

    @property
    def sizes(self) -> list[int]:
        return [len(d) for d in self.datasets]

    def __len__(self) -> int:
        return sum(self.sizes)

    def __getitem__(self, key: Key) -> SampledExample:
        dataset, index, seed = key
        examples = self.datasets[dataset]
        example = examples[index]
        rng = np.random.default_rng(seed)
        p = int(rng.integers(len(example.positives)))
        k = self.num_negatives
        if k and example.negatives:
            n = len(example.negatives)
            picks = rng.choice(n, size=k, replace=False) if n >= k else rng.choice(n, size=k, replace=True)
            negatives = tuple(example.negatives[i] for i in picks)
            negative_scores = example.negative_scores
            scores = (
                (example.positive_scores[p], *(negative_scores[i] for i in picks))
                if example.positive_scores is not None and negative_scores is not None
                else None
            )
        else:
            others: Sequence[int] = rng.choice(len(examples), size=k, replace=True).tolist() if k else []
            negatives = tuple(examples[int(i)].positives[0] for i in others)
            scores = None if k else (example.positive_scores[p],) if example.positive_scores is not None else None
        further: tuple[str, ...] = ()
        if self.positives_per_query > 1 and len(example.positives) > 1:  # drawn last: other draws stay as they were
            others_left = [i for i in range(len(example.positives)) if i != p]
            count = min(self.positives_per_query - 1, len(others_left))
            further = tuple(example.positives[others_left[int(i)]] for i in rng.choice(len(others_left), count, False))
        return SampledExample(
            query=example.query,
            prompt=example.prompt,
            positive=example.positives[p],
            negatives=negatives,
            teacher_scores=scores,
            positive_hashes=tuple(text_hash(t) for t in example.positives),
            further_positives=further,
        )


@dataclass
class TrainingBatch:
    """Tensors of one batch. Documents are laid out ``[positive_0 .. positive_{B-1}, negatives of
    query 0 (k), negatives of query 1 (k), ..., further positives of every query]`` (the last block,
    of any length, only with ``positives_per_query`` above 1); ``document_hashes`` has one hash per document and
    ``positive_hashes`` ``(B, P)`` every positive of each query (padded by repeating one), so a loss
    can mask texts that are relevant to a query but sit in another query's column."""

    query_input_ids: torch.Tensor
    query_attention_mask: torch.Tensor
    document_input_ids: torch.Tensor
    document_attention_mask: torch.Tensor
    document_hashes: torch.Tensor
    positive_hashes: torch.Tensor
    teacher_scores: torch.Tensor | None
    num_negatives: int
    query_output_mask: torch.Tensor | None = None  # per-token families: the token vectors kept
    document_output_mask: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.query_input_ids.shape[0])


class TrainingCollator:
    """Applies prompts, tokenizes with padding to the batch's longest text, and builds a :class:`TrainingBatch`.

    ``query_layout``/``document_layout``: a per-token family's token layout (ColBERT's markers,
    query expansion, skiplist), the same the encoding engine applies; the batch then carries which
    token vectors are kept (``*_output_mask``)."""

    def __init__(
        self,
        query_tokenizer,
        document_tokenizer,
        *,
        query_max_length: int,
        document_max_length: int,
        query_prompt: str = "",
        document_prompt: str = "",
        lowercase: bool = False,
        query_layout: TokenLayout | None = None,
        document_layout: TokenLayout | None = None,
    ) -> None:
        self.query_layout = query_layout
        self.document_layout = document_layout
        self.query_tokenizer = query_tokenizer
        self.document_tokenizer = document_tokenizer
        self.query_max_length = query_max_length
        self.document_max_length = document_max_length
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.lowercase = lowercase

    def _tokenize(
        self, tokenizer, texts: list[str], max_length: int, layout: TokenLayout | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self.lowercase:
            texts = [t.lower() for t in texts]
        tokenized = tokenize_with_layout(tokenizer, texts, max_length, layout)  # the encoding engine's own steps
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        batch = pad_batch(
            tokenized.input_ids, pad_id, attended=tokenized.attended, skip_ids=layout.skip_ids if layout else ()
        )
        kept = None if layout is None else torch.from_numpy(batch.kept.astype(np.int64))
        return torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask), kept

    def __call__(self, samples: list[SampledExample]) -> TrainingBatch:
        queries = [(s.prompt if s.prompt is not None else self.query_prompt) + s.query for s in samples]
        documents = [s.positive for s in samples] + [n for s in samples for n in s.negatives]
        documents += [p for s in samples for p in s.further_positives]
        q_ids, q_mask, q_kept = self._tokenize(self.query_tokenizer, queries, self.query_max_length, self.query_layout)
        d_ids, d_mask, d_kept = self._tokenize(
            self.document_tokenizer, [self.document_prompt + d for d in documents], self.document_max_length,
            self.document_layout,
        )  # fmt: skip
        width = max(len(s.positive_hashes) for s in samples)
        positive_hashes = [list(s.positive_hashes) + [s.positive_hashes[0]] * (width - len(s.positive_hashes))
                           for s in samples]  # fmt: skip
        teacher = None
        if all(s.teacher_scores is not None for s in samples):
            teacher = torch.tensor([s.teacher_scores for s in samples], dtype=torch.float32)
        counts = {len(s.negatives) for s in samples}
        if len(counts) != 1:
            raise ConfigError("every example of a batch must bring the same number of negatives")
        return TrainingBatch(
            query_input_ids=q_ids,
            query_attention_mask=q_mask,
            document_input_ids=d_ids,
            document_attention_mask=d_mask,
            document_hashes=torch.tensor([text_hash(d) for d in documents], dtype=torch.int64),
            positive_hashes=torch.tensor(positive_hashes, dtype=torch.int64),
            teacher_scores=teacher,
            num_negatives=counts.pop(),
            query_output_mask=q_kept,
            document_output_mask=d_kept,
        )


class TrainingLoader(DataLoader):
    """A DataLoader whose position can be saved and restored (Lightning saves it in checkpoints)."""

    batch_sampler: DatasetBatchSampler

    def state_dict(self) -> dict[str, int]:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)


def make_loader(
    dataset: TrainingSet, collator: Callable[[list[SampledExample]], Any], batch_size: int, *, seed: int,
    rank: int = 0, world_size: int = 1,
) -> TrainingLoader:  # fmt: skip
    sampler = DatasetBatchSampler(dataset.sizes, batch_size, seed=seed, rank=rank, world_size=world_size)
    # an own generator: each new iterator would otherwise draw a seed from torch's global RNG, which
    # dropout uses, and a run resumed mid-epoch would draw one more than the uninterrupted run
    generator = torch.Generator().manual_seed(seed)
    return TrainingLoader(dataset, batch_sampler=sampler, collate_fn=collator, num_workers=0, generator=generator)
