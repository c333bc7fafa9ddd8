"""Entry point: ``retrievekit [--verbose] COMMAND ...``. Logging is configured here and nowhere else."""

from __future__ import annotations

import errno
import logging
import sys
import warnings

import click

from retrievekit._version import __version__
from retrievekit.cli.data import data
from retrievekit.cli.demo import demo
from retrievekit.cli.encode import encode
from retrievekit.cli.evaluate import evaluate
from retrievekit.cli.index import index
from retrievekit.cli.link import link
from retrievekit.cli.model import model
from retrievekit.cli.rerank import rerank
from retrievekit.cli.search import search
from retrievekit.cli.serve import serve
from retrievekit.cli.train import mine_negatives, train
from retrievekit.errors import RetrievekitError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="retrievekit")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Train, encode, index, search, rerank and evaluate text-embedding retrieval models.

    Models are local folders (sentence-transformers, Hugging Face or retrievekit saves), 'minilm'
    for the bundled all-MiniLM-L6-v2, or hub ids. Datasets are BEIR folders or names looked up in
    $RETRIEVEKIT_DATASETS and ~/.cache/retrievekit/datasets.
    """
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)  # also filters libraries that set their own loggers to DEBUG (bm25s does)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", handlers=[handler])
    if verbose < 1:
        # one of Lightning's modules warns about a torch deprecation on every run
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
    if verbose < 2:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except ImportError:  # transformers is a core dependency; this only guards odd installs
            logging.getLogger(__name__).debug("transformers not importable; its logging left as is")


cli.add_command(data)
cli.add_command(encode)
cli.add_command(model)
cli.add_command(index)
cli.add_command(search)
cli.add_command(rerank)
cli.add_command(link)
cli.add_command(evaluate)
cli.add_command(serve)
cli.add_command(demo)
cli.add_command(mine_negatives)
cli.add_command(train)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; library errors print one clear line instead of a stack trace."""
    try:
        cli.main(args=argv, prog_name="retrievekit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (RetrievekitError, TypeError) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except OSError as exc:  # a full disk, a missing permission: one line, and the saves are atomic
        where = f"{exc.filename}: " if exc.filename else ""
        advice = "; nothing was replaced: saves are atomic, the previous files are intact" if exc.errno in (
            errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS) else ""  # fmt: skip
        click.secho(f"error: {where}{exc.strerror or exc}{advice}", fg="red", err=True)
        sys.exit(1)
