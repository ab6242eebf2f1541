"""modelport pack REPO -o bundle.tar.gz: a repository, its manifest, a model card and pinned requirements.

``--rewrite-manifest`` accepts the repository's files as they are now (the fix ``serve`` suggests
when a model no longer matches its manifest); without ``-o`` it only rewrites REPO/manifest.json.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator

from modelport.cli._common import add_json, console, emit_json

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pack", help="pack a repository into one .tar.gz that `modelport serve` serves directly")
    p.add_argument("repository", help="repository folder REPO/<name>/<version>/model.onnx (e.g. deploy-out/repository)")
    p.add_argument("-o", "--output", help="bundle to write (.tar.gz or .tgz)")
    p.add_argument("--report", help="deploy report.json whose accuracy and latency the model card copies")
    p.add_argument("--force", action="store_true", help="replace the output if it exists")
    p.add_argument(
        "--rewrite-manifest",
        action="store_true",
        help="accept the repository's files as they are now: rewrite REPO/manifest.json (alone, without -o)",
    )
    card = p.add_argument_group("model card (written as 'Not stated' when left out)")
    card.add_argument("--intended-use", metavar="TEXT", help="what the model is for")
    card.add_argument("--out-of-scope", metavar="TEXT", help="uses the model is not meant for")
    card.add_argument("--limitations", metavar="TEXT", help="known limitations, presumptions, trade-offs")
    card.add_argument("--license", metavar="TEXT", help="the model's license")
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modelport.errors import ConfigError
    from modelport.pack.bundle import pack, rewrite_manifest
    from modelport.pack.card import CardInfo

    if args.output is None:
        if not args.rewrite_manifest:
            raise ConfigError(
                "nothing to do — pass -o bundle.tar.gz to pack the repository, or --rewrite-manifest to only "
                "rewrite its manifest.json"
            )
        written = rewrite_manifest(args.repository)
        if args.json:
            emit_json({"manifest": str(written)})
        else:
            console().print(f"rewrote {written}: the repository's files as they are now are accepted")
        return 0
    info = CardInfo(
        intended_use=args.intended_use,
        out_of_scope=args.out_of_scope,
        limitations=args.limitations,
        license=args.license,
    )
    with _progress(disabled=args.json) as advance:
        result = pack(
            args.repository,
            args.output,
            report=args.report,
            card=info,
            force=args.force,
            rewrite_manifest=args.rewrite_manifest,
            progress=advance,
        )
    size = sum(d.bytes for d in result.files.values())
    if args.json:
        emit_json(
            {
                "bundle": str(result.path),
                "models": result.models,
                "files": {name: d._asdict() for name, d in result.files.items()},
                "manifest_rewritten": result.manifest_rewritten,
            }
        )
        return 0
    out = console()
    out.print(
        f"packed {len(result.files)} files ({size:,} bytes) of {', '.join(result.models)} into {result.path}"
        + (" (repository manifest rewritten)" if result.manifest_rewritten else "")
    )
    out.print(f"serve it with: modelport serve {result.path}")
    return 0


@contextlib.contextmanager
def _progress(*, disabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A byte progress bar on stderr; yields the callback :func:`pack` reports to."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("packing"), BarColumn(), DownloadColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console(stderr=True), disable=disabled, transient=True) as bar:
        task = bar.add_task("packing", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance
