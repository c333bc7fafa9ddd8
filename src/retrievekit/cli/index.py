"""``retrievekit index``: build persistent indexes."""

from __future__ import annotations

import time

import click

from retrievekit.cli._engine_options import engine_options, ray_settings
from retrievekit.cli._model_options import load_from_options, model_options
from retrievekit.cli._output import print_table
from retrievekit.index.base import METRICS


@click.group()
def index() -> None:
    """Build persistent indexes of any registered type (dense: flat, hnsw, ivfpq; lexical: bm25;
    ColBERT: multivector-flat, plaid)."""


@index.command("build")
@model_options
@engine_options
@click.option(
    "--embeddings",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Index these encoded rows (a folder from 'retrievekit encode', local or --engine ray shards) instead "
    "of encoding the corpus; --model must be the model that encoded them.",
)
@click.option(
    "--corpus", required=True, help="Corpus JSONL/TSV (_id, text, optional title), or a BEIR folder / dataset name."
)
@click.option(
    "--type",
    "index_type",
    type=click.Choice(
        [
            "flat",
            "hnsw",
            "ivfpq",
            "scann",
            "lancedb",
            "milvus",
            "bm25",
            "multivector-flat",
            "plaid",
            "sparse",
            "milvus-sparse",
        ]
    ),
    default="flat",
    show_default=True,
    help="flat: exact; hnsw / ivfpq: FAISS ANN; scann: Google's ScaNN (BET's; extra scann); bm25: lexical (no "
    "model); lancedb / milvus: a vector database at --uri (extras lancedb, milvus); multivector-flat / plaid: "
    "for ColBERT models (exact MaxSim / PLAID's compressed index); sparse: for SPLADE models (inverted index, exact); "
    "milvus-sparse: SPLADE vectors in Milvus's sparse field.",
)
@click.option(
    "--output", "-o", default=None, type=click.Path(file_okay=False), help="Index folder to write (atomically)."
)
@click.option(
    "--uri",
    default=None,
    help="lancedb / milvus: where the database is: a LanceDB folder; a Milvus Lite file (*.db) or a Milvus "
    "server (http://host:19530). Its table is replaced. Default: --output.",
)
@click.option(
    "--ann",
    type=click.Choice(["flat", "hnsw", "ivf_flat", "ivf_pq"]),
    default="flat",
    show_default=True,
    help="lancedb / milvus: the database's search structure (flat is exact; the others approximate, "
    "tuned by --nprobe, --ef-search and --partitions).",
)
@click.option("--partitions", type=click.IntRange(1), default=None,
              help="lancedb / milvus with an IVF --ann: cells (default: the database's).")  # fmt: skip
@click.option(
    "--metric",
    type=click.Choice(METRICS),
    default=None,
    help="Vector metric (default: ip for normalised models, else cosine).",
)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--hnsw-m", "M", type=click.IntRange(2), default=32, show_default=True, help="HNSW links per node.")
@click.option(
    "--ef-construction", type=click.IntRange(1), default=200, show_default=True, help="HNSW build-time candidate list."
)
@click.option(
    "--ef-search",
    type=click.IntRange(1),
    default=128,
    show_default=True,
    help="HNSW search-time candidate list (recall vs speed).",
)
@click.option("--nlist", type=click.IntRange(1), default=1024, show_default=True, help="IVF cells.")
@click.option("--nprobe", type=click.IntRange(1), default=16, show_default=True, help="IVF cells visited per query.")
@click.option(
    "--pq-m",
    type=click.IntRange(1),
    default=48,
    show_default=True,
    help="PQ sub-quantisers (must divide the dimension).",
)
@click.option("--nbits", type=click.IntRange(1, 16), default=8, show_default=True, help="Bits per PQ code.")
@click.option(
    "--residual-bits",
    type=click.Choice(["1", "2", "4"]),
    default="4",
    show_default=True,
    help="PLAID: bits per dimension of each token's residual (2: about half the size, less faithful).",
)
@click.option(
    "--centroids",
    type=click.IntRange(1),
    default=None,
    help="PLAID: k-means centroids (default: 2^floor(log2(16 sqrt(tokens))), as ColBERT).",
)
@click.option(
    "--ivf-probe",
    type=click.IntRange(1),
    default=None,
    help="PLAID: centroids probed per query token (default: 8).",
)
@click.option(
    "--full-scores",
    type=click.IntRange(1),
    default=None,
    help="PLAID: candidates kept by the pruned approximate stage (default: PLAID's per-k setting).",
)
@click.option("--leaves", type=click.IntRange(1), default=None, help="ScaNN: partitions (default: about sqrt(n)).")
@click.option("--leaves-to-search", type=click.IntRange(1), default=None,
              help="ScaNN: partitions scored per query (default: a tenth of them).")  # fmt: skip
@click.option("--reorder", type=click.IntRange(1), default=100, show_default=True,
              help="ScaNN: candidates rescored exactly per query.")  # fmt: skip
@click.option("--no-stem", is_flag=True, help="BM25: no stemming (default: English Snowball stemmer).")
@click.option("--no-stopwords", is_flag=True, help="BM25: keep English stopwords.")
def build(
    corpus,
    index_type,
    output,
    uri,
    ann,
    partitions,
    metric,
    batch_size,
    M,
    ef_construction,
    ef_search,
    nlist,
    nprobe,
    pq_m,
    nbits,
    residual_bits,
    centroids,
    ivf_probe,
    full_scores,
    leaves,
    leaves_to_search,
    reorder,
    no_stem,
    no_stopwords,
    embeddings,
    **model_kwargs,
) -> None:
    """Encode (or tokenize) a corpus and save a searchable index.

    \b
    Examples:
      retrievekit index build --corpus scifact --type hnsw --output runs/scifact-hnsw
      retrievekit index build --corpus scifact --type bm25 --output runs/scifact-bm25
      retrievekit index build --corpus scifact --type lancedb --uri runs/scifact-lancedb
      retrievekit index build --corpus scifact --type milvus --uri runs/scifact-milvus.db --ann hnsw
      retrievekit index build --corpus scifact --type hnsw --output runs/scifact-hnsw --engine ray --replicas 2
      retrievekit index build --corpus scifact --model runs/colbert --type plaid --output runs/scifact-plaid
      retrievekit index build --corpus scifact --model path/to/splade --type sparse --output runs/scifact-sparse
    """
    from retrievekit.errors import ConfigError
    from retrievekit.index.build import build_index

    database = index_type in ("lancedb", "milvus", "milvus-sparse")
    if database:
        uri = uri or output
        if uri is None:
            raise ConfigError(f"--type {index_type} needs --uri (where the database is)")
        if output is not None and output != uri:
            raise ConfigError("--output and --uri name two places; a database index lives at --uri only")
        output = uri
    elif uri is not None:
        raise ConfigError("--uri is for --type lancedb or milvus; other indexes are folders (--output)")
    elif output is None:
        raise ConfigError("--output is required: the index folder to write")
    database_params = {
        "uri": uri,
        "ann": ann,
        "partitions": partitions,
        "nprobes": nprobe,
        "ef": ef_search,
        "overwrite": True,
    }
    params = {
        "hnsw": {"M": M, "ef_construction": ef_construction, "ef_search": ef_search},
        "ivfpq": {"nlist": nlist, "nprobe": nprobe, "m": pq_m, "nbits": nbits},
        "bm25": {"stemmer": None if no_stem else "english", "stopwords": None if no_stopwords else "en"},
        "flat": {},
        "lancedb": database_params,
        "milvus": database_params,
        "milvus-sparse": database_params,
        "scann": {"leaves": leaves, "leaves_to_search": leaves_to_search, "reorder": reorder},
        "multivector-flat": {},
        "sparse": {},
        "plaid": {
            "nbits": int(residual_bits), "n_centroids": centroids, "n_ivf_probe": ivf_probe,
            "n_full_scores": full_scores,
        },
    }[index_type]  # fmt: skip
    ray = ray_settings(model_kwargs)
    started = time.perf_counter()
    from retrievekit.index.registry import index_type_info

    family = index_type_info(index_type).family
    encoder = None if family == "lexical" else load_from_options(**model_kwargs, family=family)
    built = build_index(
        corpus, index_type, encoder=encoder, output=output, metric=metric, batch_size=batch_size, params=params,
        embeddings=embeddings, ray=ray,
    )  # fmt: skip
    config = built.config()
    rows = [("type", index_type), ("documents", len(built)), *((k, str(v)) for k, v in config.items())]
    if encoder is not None:
        rows.append(("model", encoder.name))
    rows.append(("seconds", f"{time.perf_counter() - started:.1f}"))
    print_table(f"Index written to {output}", ["", "value"], rows)
