"""``clip-search``: query a collection by text, by image or by a stored item, with payload filters.

Output: an aligned table (default), ``--json`` (one document), ``--jsonl`` (one hit per line)
and/or ``--html FILE`` (a self-contained page with inlined thumbnails). Exit codes: 0 done
(also with no hits), 1 fatal (database unreachable, model mismatch, unknown point), 2 usage
error (bad filter, bad options). Store, model and config options are shared with
``clip-ingest`` (:mod:`.common`). Without ``--model`` (flag, config or environment) the model
the collection records is used; an explicit one is still checked against the collection.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Sequence

import click

from ..config import Setting, Settings, register_command
from ..search.results import hit_dict, result_document
from ..serve.fields import FIELD_SAMPLE, sample_fields
from .common import EXIT_OK, DefaultCommandGroup, common_options, fatal, load_query_embedder, load_settings, open_target_store, setting_option, setup_logging, store_target

K = Setting("k", int, 10, cli_flag="-k", minimum=1, maximum=10_000, help="Number of hits")
BATCH_SIZE = Setting("batch_size", int, 32, minimum=1, help="Model batch size")
SEARCH_SETTINGS: tuple[Setting, ...] = (K, BATCH_SIZE)
SEARCH = register_command("search", SEARCH_SETTINGS)

#: payload fields shown in the table (everything is in --json / --html)
TABLE_FIELDS = ("path",)


#: ``--version``: the installed clip-ingest distribution's version
version_option = click.version_option(package_name="clip-ingest", prog_name="clip-search", message="%(prog)s %(version)s")


@click.group(cls=DefaultCommandGroup, default="query", context_settings={"help_option_names": ["-h", "--help"]})
@version_option
def main() -> None:
    """Search a clip-ingest collection (``clip-search --text ...``) or serve it (``clip-search serve``)."""


class QueryCommand(click.Command):
    """The default command, whose help is what ``clip-search --help`` shows: it ends with the
    other commands, so they can be found from there."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        others = [(name, first_sentence(main.commands[name].help or "")) for name in main.list_commands(ctx)
                  if name != self.name]
        if others:
            with formatter.section("Other commands (clip-search COMMAND --help)"):
                formatter.write_dl(others)


def first_sentence(text: str) -> str:
    """The first sentence of a command's help, on one line."""
    line = " ".join(text.split("\n\n")[0].split())
    return line.split(". ")[0].rstrip(".")


@main.command("query", cls=QueryCommand, context_settings={"help_option_names": ["-h", "--help"]})
@version_option
@click.option("--text", "texts", multiple=True, help="Find images matching this text (repeatable: one model load, results per query).")
@click.option("--image", "images", multiple=True, type=click.Path(exists=True, dir_okay=False), help="Find images similar to this image file (repeatable).")
@click.option("--like", "likes", multiple=True, help="Find images similar to a stored point (ID) or an image file (PATH), excluding it (repeatable).")
@click.option("--filter", "filter_text", default=None, help='Payload filter, e.g. \'colour = "red" and year >= 2020\' (see docs/filters.md).')
@setting_option(K)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True, help="Skip this many hits (paging).")
@click.option("--min-score", type=float, default=None, help="Only hits with cosine similarity >= this.")
@click.option("--min-relevance", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Hits with at least this calibrated relevance, the same setting for every model. --image / --like: "
                   "the probability of a near-duplicate of the query at equal prior, by the embedding alone: look-alikes "
                   "pass too (clip-search duplicates checks pixels). --text: the share of hits that matched the words at "
                   "that score, on queries like those the model was calibrated on (the starter: object words; "
                   "clip-model calibrate-text). See docs/relevance.md.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="Print one JSON object per hit.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, writable=True), default=None, help="Also write a self-contained HTML page of the results.")
@setting_option(BATCH_SIZE)
@common_options
@click.option("-v", "--verbose", count=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
def query(
    texts: tuple[str, ...], images: tuple[str, ...], likes: tuple[str, ...], filter_text: str | None, offset: int,
    min_score: float | None, min_relevance: float | None, as_json: bool, as_jsonl: bool, html_file: str | None,
    verbose: int, quiet: bool, **params: Any,
) -> None:
    """Search a clip-ingest collection by --text, --image or --like, optionally with --filter.

    Each of --text, --image and --like may be repeated, and mixed: the model loads once and
    the results are printed per query: every --text (embedded in one batch), then every
    --image, then every --like, each in the order given.

    To serve a search page and an HTTP API over the collection instead: clip-search serve --help
    """
    from ..filters import FilterSyntaxError, parse_filter

    setup_logging(verbose, quiet)
    queries = [("text", t) for t in texts] + [("image", i) for i in images] + [("like", x) for x in likes]
    if not queries:
        raise click.UsageError("give at least one --text, --image or --like")
    if as_json and as_jsonl:
        raise click.UsageError("--json and --jsonl are exclusive")
    if min_relevance is not None and min_score is not None:
        raise click.UsageError("--min-relevance and --min-score are exclusive")
    if html_file and len(queries) > 1:
        raise click.UsageError("--html writes one query's page: give a single --text, --image or --like")
    try:
        parsed = parse_filter(filter_text) if filter_text is not None else None
    except FilterSyntaxError as exc:
        raise click.UsageError(f"--filter: {exc}") from None
    settings = load_settings(params, SEARCH)
    results = _run(settings, queries, parsed, offset, min_score, min_relevance)
    if html_file:
        from ..search.html import render_html

        kind, value = queries[0]
        title = f"--{kind} {value}" + (f"  filter: {filter_text}" if filter_text else "")
        with open(html_file, "w", encoding="utf-8") as out:
            out.write(render_html(title, results[0], first_rank=offset + 1))
    if as_json:
        groups = [result_document({kind: value}, hits, offset=offset, filter_text=filter_text)
                  for (kind, value), hits in zip(queries, results)]
        document: dict[str, Any] = groups[0] if len(groups) == 1 else {
            "filter": filter_text, "results": [{"query": g["query"], "hits": g["hits"]} for g in groups]}
        click.echo(json.dumps(document, ensure_ascii=False, default=str))
    elif as_jsonl:
        for (kind, value), hits in zip(queries, results):
            for rank, hit in enumerate(hits, offset + 1):
                line = hit_dict(rank, hit) if len(queries) == 1 else {"query": {kind: value}, **hit_dict(rank, hit)}
                click.echo(json.dumps(line, ensure_ascii=False, default=str))
    else:
        for i, ((kind, value), hits) in enumerate(zip(queries, results)):
            if len(queries) > 1:
                click.echo(("\n" if i else "") + f"== --{kind} {value}")
            click.echo(format_table(hits, offset))
    sys.exit(EXIT_OK)


def _run(
    settings: Settings, queries: Sequence[tuple[str, str]], filter: Any, offset: int, min_score: float | None,
    min_relevance: float | None = None,
) -> list[list]:
    """One hit list per query; texts are embedded in one batch. ``min_relevance`` becomes each
    text query's own cut through the model's text calibration, and one raw cosine for image
    queries through its image calibration (measured on the collection's images at first use)."""
    from ..backends.base import InvalidSettingError, StoreError
    from ..decode import ImageDecodeError
    from ..model_spec import ModelLoadError
    from ..filters import UnsupportedFilterError
    from ..search.searcher import PointNotFoundError, Searcher

    k = settings.k
    try:
        with open_target_store(store_target(settings), settings.collection) as store:
            embedder = load_query_embedder(settings, store)
            searcher = Searcher(store, embedder)
            searcher.verify_model()
            texts = [value for kind, value in queries if kind == "text"]
            try:
                by_text = iter(searcher.search_texts(texts, k=k, filter=filter, offset=offset, score_threshold=min_score,
                                                     min_relevance=min_relevance) if texts else [])
                if min_relevance is not None and len(texts) < len(queries):
                    from ..calibration import collection_calibration, cosine_for

                    min_score = cosine_for(collection_calibration(embedder, store), min_relevance)
            except UnsupportedFilterError:
                raise  # a filter this backend cannot run: answered below as a --filter error
            except ValueError as exc:
                raise click.UsageError(f"--min-relevance: {exc}") from None
            results: list[list] = []
            for kind, value in queries:
                if kind == "text":
                    results.append(next(by_text))
                elif kind == "image":
                    results.append(searcher.search_image(value, k=k, filter=filter, offset=offset, score_threshold=min_score))
                else:
                    results.append(searcher.search_similar(value, k=k, filter=filter, offset=offset, score_threshold=min_score))
            if filter is not None and not any(results):
                _warn_unknown_fields(store, filter)
            return results
    except UnsupportedFilterError as exc:
        raise click.UsageError(f"--filter: {exc}") from None
    except InvalidSettingError as exc:
        raise click.UsageError(str(exc)) from None
    except ImageDecodeError as exc:
        raise click.UsageError(str(exc)) from None
    except (StoreError, ModelLoadError, PointNotFoundError) as exc:
        fatal(str(exc))
    raise AssertionError("unreachable")  # fatal() exits


def _warn_unknown_fields(store: Any, filter: Any) -> None:
    """No hits with a filter: warn about filter fields that none of the first points has (a typo
    such as ``lable`` otherwise looks like an empty result); the server warns the same way."""
    warning = sample_fields(store.scroll(batch_size=FIELD_SAMPLE)).warning(filter)
    if warning:
        logging.getLogger("clip_ingest.search").warning("no hits; %s", warning)


def format_table(hits: Sequence[Any], offset: int = 0) -> str:
    """Hits as an aligned text table: rank, score, id and the ``path`` payload field."""
    if not hits:
        return "no results"
    header = ("rank", "score", "id") + TABLE_FIELDS
    rows = [
        (str(rank), f"{hit.score:.4f}", hit.id) + tuple(_cell(hit.payload.get(f)) for f in TABLE_FIELDS)
        for rank, hit in enumerate(hits, offset + 1)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows])


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # one line per hit, whatever the payload holds
    return "".join(ch if ch.isprintable() else "?" for ch in text)


from .duplicates import duplicates, review  # noqa: E402  (subcommands of main)
from .serve import serve  # noqa: E402

main.add_command(serve)
main.add_command(duplicates)
main.add_command(review)

__all__ = ["SEARCH", "SEARCH_SETTINGS", "format_table", "main", "query"]


if __name__ == "__main__":
    main()
