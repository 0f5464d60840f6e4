"""siqa command line: features -> sql -> oof -> submit, plus predict, report, weights, doctor, demo-data, store gc.

Exit status: 0 done; 1 the work failed (every `SiqaError`, printed as one line `siqa: error: <file>: <problem>`);
2 the command line itself is wrong (unknown option, missing argument: click's usage errors); 130 interrupted.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from configs import presets
from featurestore.errors import SiqaError
from siqa import DEFAULT_RUN, DEFAULT_STORE, default_store, reading_store

FRAME_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def _store_option(f):
    return click.option("--store", "store", type=click.Path(file_okay=False), default=None,
                        help=f"feature store folder (default $SIQA_STORE or ./{DEFAULT_STORE})")(f)


def _config_option(f):
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                        help="TOML config (default configs/default.toml)")(f)


def _newest_run(ctx, param, value):
    """The default `--run runs/latest` is the link siqa keeps to the newest run; a real folder there (made by
    hand, or by an older siqa's oof) may hold an older run, so it is used only when named."""
    source = ctx.get_parameter_source(param.name)
    if source is click.core.ParameterSource.DEFAULT and Path(value).is_dir() and not Path(value).is_symlink():
        raise SiqaError(f"{value}: a real folder, not the link siqa keeps to the newest run, so it may hold an older "
                        f"run; pass --run {value} to use it anyway, or move it away and run `siqa oof`")
    return value


def _run_option(f):
    return click.option("--run", "run_dir", type=click.Path(file_okay=False), default=DEFAULT_RUN, show_default=True,
                        callback=_newest_run, help="run folder (default: the newest run)")(f)


def _quiet_option(f):
    return click.option("-q", "--quiet", is_flag=True, help="no progress bars or notices (also `siqa --quiet CMD`)")(f)


def _quiet(flag: bool) -> bool:
    """The command's own --quiet, or the group's."""
    return flag or bool((click.get_current_context().find_root().obj or {}).get("quiet"))


def _usage(message: str):
    return click.UsageError(message, ctx=click.get_current_context())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("siqa")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


def _frame_format(out, fmt, option_hint: str = ", or --format") -> str:
    """--format, else the format of --out's extension (.csv, .json, .parquet), else a printed table."""
    if fmt:
        return fmt
    if out:
        suffix = Path(out).suffix.lower()
        if suffix not in FRAME_FORMATS:
            raise _usage(f"--out {out}: cannot tell the format from {suffix or 'no extension'!r}; "
                         f"use .csv, .json or .parquet{option_hint}")
        return FRAME_FORMATS[suffix]
    return "table"


def _frame_bytes(df, fmt: str) -> bytes:
    """`df` as csv, json (records, newline-terminated), parquet or a printed table. `df.attrs` (notes for
    this process, such as predict's timings) are not data: the file holds the rows only."""
    df = df.copy(deep=False)
    df.attrs = {}
    if fmt == "csv":
        return df.to_csv(index=False).encode()
    if fmt == "json":
        return (df.to_json(orient="records", indent=1, default_handler=str) + "\n").encode()
    if fmt == "parquet":
        import io

        buffer = io.BytesIO()
        df.to_parquet(buffer, index=False)
        return buffer.getvalue()
    import pandas as pd

    with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200):
        return (df.to_string(index=False) + "\n").encode()


def _emit_frame(df, fmt: str, out, what: str = "rows") -> None:
    """Write `df` in `fmt` to `out` through siqa's one output writer, or print it."""
    if fmt == "parquet" and not out:
        raise _usage("--format parquet needs --out FILE")
    if out:
        from blend.outputs import write_output

        write_output(out, _frame_bytes(df, fmt))
        click.echo(f"{len(df)} {what} -> {out}")
    else:
        click.echo(_frame_bytes(df, fmt).decode(), nl=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "-V", "--version", prog_name="siqa", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars or notices, for every command")
@click.pass_context
def app(ctx, verbose: bool, quiet: bool):
    """Semantic image quality assessment: feature store + tabular AutoML."""
    ctx.obj = {"quiet": quiet}
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
@click.option("--data", required=True, type=click.Path(), help="SeIQA folder or pairs table (CSV/Parquet)")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="image root of a pairs table (default: its folder)")
@click.option("--splits", default=None, help="comma-separated subset of train,val,test")
@_store_option
@_config_option
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", default=None, help="Ray cluster address (with --backend ray)")
@click.option("--strict", is_flag=True, help="exit non-zero if any image or pair failed")
@click.option("--replace", is_flag=True, help="replace pairs registered before under the same split and name")
@click.option("--allow-outside-root", is_flag=True, help="accept image paths outside the dataset root")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="worker processes (one thread each) for the CPU extractors; default: one per CPU this process "
                   "may use; 1 computes in this process")
@_quiet_option
def features(data, root, splits, store, config_path, backend, address, strict, replace, allow_outside_root, workers,
             quiet):
    """Compute every missing feature of a dataset into the store."""
    from blend.settings import load_settings
    from featurestore.config import build_extractors
    from featurestore.datasets import load_pairs
    from featurestore.weights import check_weights

    quiet = _quiet(quiet)
    settings = load_settings(config_path)
    if not _is_there(data):  # the problem is the data, not weights it would have needed
        raise SiqaError(f"{data}: no such file or folder")
    extractors = build_extractors(settings.extractors)
    if not extractors:
        raise SiqaError(f"{settings.source}: no extractor enabled")
    check_weights(extractors)  # stops before any work, listing every missing weight
    table = load_pairs(data, splits=splits.split(",") if splits else None, root=root,
                       allow_outside_root=allow_outside_root)
    if backend == "ray":
        from featurestore.ray_backend import extract_with_ray

        summary = extract_with_ray(default_store(store), table, extractors, address=address, progress=not quiet,
                                   replace=replace)
    else:
        from featurestore.store import FeatureStore

        summary = FeatureStore(default_store(store)).extract(table, extractors, progress=not quiet, replace=replace,
                                                             workers=workers)
    for line in summary.lines():
        click.echo(line)
    if strict and summary.failures:
        raise SiqaError(f"{data}: {len(summary.failures)} failure(s) during extraction (--strict)")


@app.command()
@click.argument("query", required=False)
@_store_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "parquet", "json"]), default=None,
              help="default: from --out's extension, else a table")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="write the result here")
@click.option("--allow-read", "readable", multiple=True, type=click.Path(exists=True),
              help="a file or folder SQL may also read (repeatable); the store and its runs always")
@_quiet_option
def sql(query, store, fmt, out, readable, quiet):
    """Run SQL over the store's views (pairs, labels, <extractor>, features); no query: interactive shell.

    Only reads run (SELECT, EXPLAIN of a SELECT), on a DuckDB connection that reads files only below the
    store, its runs and --allow-read paths; `siqa sql .tables` runs a dot command. Without --store and
    $SIQA_STORE, and with no ./store, it reads the store of runs/latest."""
    import io
    import sys

    from blend.sql import RUN_EXTENSIONS
    from featurestore import sql as fsql

    root = reading_store(store)
    if query is None or query.lstrip().startswith("."):
        from featurestore.sql.shell import interactive

        if out:
            raise _usage("--out takes the rows of a query, not the shell or a dot command")
        if query is not None:  # one dot command: its answer on stdout, or its error as siqa's one line
            answer = io.StringIO()
            failed = interactive(root, stdin=io.StringIO(query + "\n"), out=answer, extensions=RUN_EXTENSIONS,
                                 readable=readable)
            if failed:
                raise SiqaError(answer.getvalue().strip().splitlines()[-1].removeprefix("error: "))
            click.echo(answer.getvalue(), nl=False)
            return
        failed = interactive(root, extensions=RUN_EXTENSIONS, readable=readable)
        if failed and not sys.stdin.isatty():
            raise SiqaError(f"{root}: {failed} statement(s) of the script failed")
        return
    fmt = _frame_format(out, fmt)
    _emit_frame(fsql.query(root, query, extensions=RUN_EXTENSIONS, readable=readable), fmt, out)


@app.command()
@_store_option
@click.option("--table", type=click.Path(dir_okay=False), default=None, help="bring-your-own feature table (CSV/Parquet)")
@click.option("--label", default=None, help="label column of --table")
@click.option("--group", default=None, help="group column of --table (folds never split a group)")
@click.option("--lower-better", is_flag=True, help="the label grows with distortion (DMOS)")
@click.option("--features", "feature_list", default=None,
              help="comma-separated feature columns (default: every numeric column but the label, the group, ids "
                   "and columns that describe how a pair was made or how raters agreed: dst_type, dst_idx, dst_lev, "
                   "var, *_std, label-like names; each left out is listed with why in run.json's skipped_columns)")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), default=DEFAULT_RUN, show_default=True,
              help="run folder to write; `P/latest` (the default): a new folder in P, and P/latest a link to it")
@_config_option
@click.option("--preset", type=click.Choice(presets()), default=None, help="override the config's preset")
@click.option("--seed", type=int, default=None)
@click.option("--time-limit", type=click.FloatRange(min=1), default=None,
              help="seconds: plan repeats and pool members to finish in time; says what it dropped")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of the leaderboard: the "
              "headline metrics and `versus` (its gaps to the best member and to the raw feature)")
@click.option("--allow-missing", is_flag=True, help="learn even if labelled pairs lack some extractor's features")
@_quiet_option
def oof(store, table, label, group, lower_better, feature_list, run_dir, config_path, preset, seed, time_limit,
        as_json, allow_missing, quiet):
    """Grouped, nested out-of-fold evaluation of the model pool and blend; writes a run folder."""
    from blend.settings import load_settings
    from featurestore.datasets import says_lower_better

    quiet = _quiet(quiet)
    if table and (not label or not group):
        raise _usage("--table needs --label COL and --group COL")
    if table and label == group:
        raise _usage(f"--label and --group both name {label!r}: folds grouped by the label would leak it; give "
                     f"the column that names the reference image as --group")
    flags = {"preset": preset, "seed": seed, "time_limit": time_limit}
    settings = load_settings(config_path, {k: v for k, v in flags.items() if v is not None})
    from blend.run import point_latest, run_oof, run_target
    from tabular.data import TabularData

    columns = feature_list.split(",") if feature_list else None
    run_dir, latest = run_target(Path(run_dir))
    if table:
        data = TabularData.from_table(table, label=label, group=group, lower_better=lower_better, features=columns)
        if says_lower_better(label) and not lower_better:
            click.echo(f"siqa: warning: {table}: label column {label!r} reads as lower = better quality (a DMOS, a "
                       f"distortion); pass --lower-better if so, or the run learns the ranking upside down", err=True)
    else:
        data = TabularData.from_store(default_store(store), features=columns, lower_better=lower_better)
    summary = run_oof(data, settings, run_dir, progress=not (quiet or as_json), allow_missing=allow_missing)
    for warning in summary.get("warnings", []):
        click.echo(f"siqa: warning: {warning}", err=True)
    skipped = summary.get("skipped_columns") or {}
    if skipped and not quiet:
        click.echo("siqa: not used as features: " + "; ".join(f"{c} ({why})" for c, why in skipped.items()), err=True)
    if point_latest(run_dir, latest) is None and latest is not None:
        click.echo(f"siqa: warning: {latest} is a real folder, not siqa's link to the newest run: not updated", err=True)
    if as_json:
        if time_limit is not None:
            click.echo(summary["plan"]["text"], err=True)
        click.echo(json.dumps({**summary["headline"], "versus": summary["versus"]}, sort_keys=True))
    else:
        click.echo(summary["leaderboard_text"])
        click.echo(f"run -> {run_dir}" + (f" ({latest} points at it)" if latest and latest.is_symlink() else ""))
    from blend.report import write_report

    report_path = write_report(run_dir, progress=not (quiet or as_json))
    if not as_json:
        click.echo(f"report -> {report_path}")


@app.command()
@_run_option
@click.option("--split", default="test", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="zip path (default RUN/submission.zip)")
@click.option("--cpu/--gpu", default=True, help="what readme.txt declares as the device")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="feature store (default: the run's own)")
@click.option("--allow-missing", is_flag=True, help="score pairs that lack some extractor's features (counts warned)")
@_quiet_option
def submit(run_dir, split, out, cpu, store, allow_missing, quiet):
    """Predict a split with the run's pipeline (refit on all labelled rows by `siqa oof`); write the validated zip."""
    from blend.submission import submit_run

    path, n = submit_run(Path(run_dir), split=split, out=Path(out) if out else None, cpu=cpu,
                         progress=not _quiet(quiet), store=store, allow_missing=allow_missing)
    click.echo(f"{n} predictions -> {path}")


@app.command()
@_run_option
@click.option("--ref", type=click.Path(), default=None, help="reference image, or a folder of them")
@click.option("--dist", type=click.Path(), default=None,
              help="degraded image, or a folder (paired by file name with a --ref folder; every image in it "
                   "against a --ref file)")
@click.option("--pairs", type=click.Path(), default=None,
              help="pairs table or SeIQA folder: predict every pair (a table's own columns are kept)")
@click.option("--table", type=click.Path(dir_okay=False), default=None,
              help="feature table (CSV/Parquet) with the columns a `siqa oof --table` run was fit on: predict every "
                   "row, keeping its columns")
@click.option("--with-features", is_flag=True, help="also output the features the prediction used")
@click.option("--allow-size-mismatch", is_flag=True,
              help="score a pair whose images differ in size (the degraded one resized to the reference; the row "
                   "is flagged `resized`) instead of refusing it")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="write the scores here (.csv, .json or .parquet; default: stdout as CSV)")
@click.option("--allow-outside-root", is_flag=True, help="accept --pairs image paths outside the table's folder")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="feature store (default: the run's own)")
@click.option("--allow-missing", is_flag=True, help="score pairs some extractor failed on (counts warned)")
@click.option("--explain", "with_explanation", is_flag=True,
              help="add the three feature groups that moved each score most (attribution_1..3 and their values)")
@_quiet_option
def predict(run_dir, ref, dist, pairs, table, with_features, allow_size_mismatch, out, allow_outside_root, store,
            allow_missing, with_explanation, quiet):
    """Score new pairs with a fitted run, computing missing features through the run's store; or, with
    --table, the rows of a feature table. Predictions are in the run's label units and orientation; the run's
    basis (rows, label source, image sizes, CV Final) is printed once on stderr. Every row keeps the input's
    columns and carries flags to filter on: `flagged` (any of them), `outside_range` (how far its furthest
    feature lies outside what the run was fit on, in widths of that range) and `outside_features`; for image
    pairs also `resized`, `size_unusual` (far from the training image sizes) and, where the run has an
    embedding cosine, `unrelated` (probably not reference and copy)."""
    from siqa import load

    quiet = _quiet(quiet)
    if sum(map(bool, (table, pairs, ref or dist))) > 1:
        raise _usage("give one of --table FILE, --pairs FILE_OR_FOLDER, or --ref with --dist")
    if table and with_explanation:
        raise _usage("--explain explains image pairs (--pairs, --ref/--dist), not the rows of a --table")
    predictor = load(Path(run_dir), store, allow_missing, allow_size_mismatch)
    if not quiet:  # on stderr: stdout stays the score or the table, for scripts
        click.echo(predictor.basis(), err=True)
    if not table:
        predictor.require_images()  # a run fit on a feature table: say so, not what a pairs table lacks
    if ref and dist and not out and not with_features and not with_explanation and Path(ref).is_file() \
            and Path(dist).is_file():
        # one score on stdout: no table (nor pandas) needed
        scored = predictor.score_files([(ref, dist)], progress=not quiet)
        if not quiet:
            click.echo(f"1 pair(s) scored in {scored.seconds:.1f}s ({scored.computed} feature rows computed, "
                       f"{scored.reused} reused from the store)", err=True)
        click.echo(f"{scored.scores[0]:.4f}")
        flags = [name for name, value in predictor.image_flags([(ref, dist)]).items() if value[0]]
        if flags and not quiet:
            click.echo(f"siqa: warning: flagged {', '.join(flags)} (--out FILE writes every flag, the feature ranges "
                       f"included)", err=True)
        return
    fmt = _frame_format(out, None, option_hint="") if out else "csv"
    if out:
        from blend.outputs import check_target

        check_target(out)  # before scoring; written through blend.outputs.write_output
    if table:
        from tabular.data import read_table

        scores = predictor.predict(read_table(table), with_features=with_features, source=table)
    else:
        pair_table, rows = _pairs_to_score(ref, dist, pairs, allow_outside_root, "predict")
        scores = predictor.predict_table(pair_table, progress=not quiet, rows=rows, with_features=with_features)
        if not quiet:
            done = scores.attrs["extract"]
            click.echo(f"{len(scores)} pair(s) scored in {scores.attrs['seconds']:.1f}s ({sum(done.computed.values())} "
                       f"feature rows computed, {sum(done.cached.values())} reused from the store)", err=True)
        if with_explanation:
            import pandas as pd

            from blend.explain import RunExplainer, top_columns
            from blend.run import load_run

            data, _ = predictor.features(pair_table, progress=not quiet)
            attributions = RunExplainer(load_run(run_dir), predictor.store, per_feature=False).attributions(
                data, progress=not quiet)
            scores = pd.concat([scores, top_columns(attributions)], axis=1)
    if not quiet and scores["flagged"].any():
        click.echo(f"siqa: warning: {int(scores['flagged'].sum())} of {len(scores)} row(s) flagged (see the columns "
                   f"flagged, outside_range, outside_features" + (", resized, size_unusual" if not table else "")
                   + ")", err=True)
    _emit_frame(scores, fmt, out, "predictions")


def _is_there(path) -> bool:
    """Whether something is at `path`: a link to nothing is there too (the reader names it as such)."""
    return Path(path).exists() or Path(path).is_symlink()


def _pairs_to_score(ref, dist, pairs, allow_outside_root, command: str):
    """(PairTable, the user's rows or None) for --pairs, or --ref/--dist as two files, two folders paired by file
    name, or one reference file against every image of a --dist folder."""
    from featurestore.datasets import PairTable, folder_images, folder_pairs, load_pairs

    if pairs:
        rows = None
        if Path(pairs).is_file():  # a pairs table: its own columns (codec, quality, bpp, ...) come back
            from tabular.data import read_table

            rows = read_table(pairs)
        return load_pairs(pairs, allow_outside_root=allow_outside_root), rows
    if not (ref and dist):
        raise _usage(f"{command} needs --ref IMG --dist IMG, --ref IMG --dist DIR (one reference against every image "
                     f"there), --ref DIR --dist DIR, or --pairs FILE_OR_FOLDER"
                     + (" or --table FILE" if command == "predict" else ""))
    for path in (ref, dist):
        if not _is_there(path):
            raise SiqaError(f"{path}: no such file or folder")
    if Path(ref).is_dir() and not Path(dist).is_dir():
        raise _usage("--ref is a folder and --dist a file: give --dist a folder paired by file name, or one "
                     "--ref file against a --dist folder (or a table with --pairs)")
    if Path(ref).is_dir():
        found = folder_pairs(ref, dist)
    elif Path(dist).is_dir():
        found = [(ref, image) for image in folder_images(dist)]
    else:
        found = [(ref, dist)]
    if not found:
        raise SiqaError(f"{dist}: no images")
    return PairTable.from_paths(found, split="test"), None


@app.command()
@_run_option
@click.option("--split", default=None, help="explain every pair of this split of the run's store (train, val, test)")
@click.option("--ref", type=click.Path(), default=None, help="reference image, or a folder of them")
@click.option("--dist", type=click.Path(), default=None, help="degraded image, or a folder (paired by file name)")
@click.option("--pairs", type=click.Path(), default=None, help="pairs table or SeIQA folder: explain every pair")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="folder for explanations.json and maps/<pair>.png|.npy")
@click.option("--background", type=click.IntRange(1), default=8, show_default=True,
              help="labelled rows the attributions average over (each costs 2^groups scores per pair)")
@click.option("--groups-only", is_flag=True,
              help="attribute to feature groups only, not also to each feature (about 20x cheaper)")
@click.option("--allow-outside-root", is_flag=True, help="accept --pairs image paths outside the table's folder")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="feature store (default: the run's own)")
@_quiet_option
def explain(run_dir, split, ref, dist, pairs, out_dir, background, groups_only, allow_outside_root, store, quiet):
    """Split each pair's score into baseline + one value per feature group, and map where its meaning changed."""
    from blend.explain import check_out, explain as explain_pairs, write_explanations
    from siqa import load

    quiet = _quiet(quiet)
    from blend.run import load_run, run_origin

    check_out(out_dir)
    predictor, run = load(Path(run_dir), store), load_run(run_dir)
    if split:
        if ref or dist or pairs:
            raise _usage("explain takes --split, or --pairs, or --ref/--dist, not several")
        from tabular.data import TabularData

        training = TabularData.from_origin(run_origin(run, store))
        data = training.subset(training.split == split)
        if not data.n_rows:
            raise SiqaError(f"{predictor.store}: no pair in split {split!r}")
    else:
        training = None
        data, _ = predictor.features(_pairs_to_score(ref, dist, pairs, allow_outside_root, "explain")[0],
                                    progress=not quiet)
    explanations = explain_pairs(run, data, store, background, training=training, per_feature=not groups_only,
                                 progress=not quiet)
    path = write_explanations(out_dir, [str(name) for name in data.names], explanations)
    click.echo(f"{data.n_rows} pair(s) explained -> {path}")


@app.command()
@_run_option
@click.option("--store", type=click.Path(file_okay=False), default=None, help="feature store (default: the run's own)")
@_quiet_option
def report(run_dir, store, quiet):
    """Write report.html and PNG plots for a run."""
    from blend.report import write_report

    click.echo(f"report -> {write_report(Path(run_dir), progress=not _quiet(quiet), store=store)}")


@app.command()
@_config_option
@click.option("--check", is_flag=True, help="kept for scripts: exiting 1 when an enabled extractor has no weights "
                                             "here is the default")
@click.option("--download", is_flag=True, help="fetch every weight the enabled extractors need")
@click.option("--to", "to", type=click.Path(file_okay=False), default=None,
              help="with --download: put them in DIR laid out as $SIQA_WEIGHTS_DIR (default: the libraries' caches)")
@_quiet_option
def weights(config_path, check, download, to, quiet):
    """Say, per configured extractor, whether its weights load here and from where (exit 1 when an enabled
    extractor misses one); --download fetches them."""
    from blend.settings import load_settings
    from featurestore.config import build_extractors
    from featurestore.weights import check_weights, describe_weights

    if to and not download:
        raise _usage("--to DIR goes with --download")
    settings = load_settings(config_path)
    config = settings.extractors
    disabled = {name for name, entry in config.items() if not entry.enabled}
    if download:
        from featurestore.downloads import download_weights

        enabled = build_extractors(config)
        download_weights(enabled, Path(to).expanduser() if to else None, echo=click.echo)
        if to:
            click.echo(f"set SIQA_WEIGHTS_DIR={Path(to).expanduser().resolve()} so that siqa finds them there")
            return
    if not _quiet(quiet):
        click.echo(describe_weights(build_extractors(config, include_disabled=True), disabled))
    missing = [s for s in check_weights(build_extractors(config), strict=False) if s.found is None]
    if missing:  # a failed check whether or not --check was given (issue 13)
        names = sorted({s.what.split(": ", 1)[0] for s in missing})
        raise SiqaError(f"{settings.source}: {len(missing)} weight(s) missing for enabled extractor(s) "
                        f"{', '.join(names)} (see above; `siqa weights --download` fetches them)")


@app.command()
@_config_option
@click.option("--calib", type=click.Path(file_okay=False), default=None,
              help="calibration pairs: ref/, dist/, official_values.csv (default: ../shared/data/calib beside siqa)")
@click.option("--official", type=click.Path(dir_okay=False), default=None, help="published values (default CALIB/official_values.csv)")
@click.option("--seiqa", type=click.Path(file_okay=False), default=None, help="SeIQA folder: also check the CLIP cosine baseline")
@click.option("--seiqa-labels", type=click.Path(dir_okay=False), default=None,
              help="published cos_sim per training pair (default SEIQA/train_labels.csv)")
@_quiet_option
def doctor(config_path, calib, official, seiqa, seiqa_labels, quiet):
    """Run the enabled extractors on pairs with published answers and compare; non-zero exit on any miss."""
    from blend.settings import load_settings
    from featurestore.config import build_extractors
    from featurestore.doctor import calibration_checks, format_checks, seiqa_cosine_check

    extractors = build_extractors(load_settings(config_path).extractors)
    calib = Path(calib) if calib else Path(__file__).resolve().parent.parent / "shared" / "data" / "calib"
    checks = calibration_checks(extractors, calib, Path(official) if official else None)
    if seiqa:
        labels = Path(seiqa_labels) if seiqa_labels else Path(seiqa) / "train_labels.csv"
        checks += seiqa_cosine_check(Path(seiqa), labels, progress=not quiet)
    click.echo(format_checks(checks))
    if any(c.failed for c in checks):
        sys.exit(1)


@app.command()
@_store_option
@click.option("--measure", is_flag=True, help="time a demo pair for extractors the store has not timed")
@click.option("--json", "as_json", is_flag=True, help="one JSON list instead of text")
@_quiet_option
def extractors(store, measure, as_json, quiet):
    """Every registered extractor: columns, config keys with defaults, weights, cost per pair on this machine."""
    from featurestore.catalogue import describe_extractors, format_extractors

    rows = describe_extractors(reading_store(store), measure=measure)
    click.echo(json.dumps(rows, indent=1, default=str) if as_json else format_extractors(rows))


@app.group()
def config():
    """Configuration."""


@config.command("show")
@_config_option
@_quiet_option
def config_show(config_path, quiet):
    """Print the resolved, validated settings as JSON: each enabled extractor with every setting (defaults
    filled in) and its store folder, and the [tabular] settings after the preset is applied."""
    from blend.settings import load_settings
    from featurestore.config import build_extractors

    settings = load_settings(config_path)
    folders = {ex.name: ex.folder for ex in build_extractors(settings.extractors)}
    tables = settings.as_tables()
    resolved = {"path": settings.source,
                "extractors": {name: {"folder": folders[name], **table} for name, table in tables["extractors"].items()
                               if name in folders},
                "tabular": tables["tabular"]}
    click.echo(json.dumps(resolved, indent=2, sort_keys=True, default=str))


@config.command("schema")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
def config_schema(fmt):
    """Every settings key with its type, default and meaning, generated from the schema (extractors, [tabular],
    [tabular.meta], [tabular.blend], [tabular.pool.<model>])."""
    from blend.schema import schema_rows, schema_text

    rows = schema_rows()
    click.echo(json.dumps(rows, indent=1) if fmt == "json" else schema_text(rows, markdown=fmt == "markdown"))


@app.command("demo-data")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True)
@_quiet_option
def demo_data(out, seed, quiet):
    """Write a small SeIQA-layout dataset made from real photos shipped in scikit-image / scikit-learn."""
    from featurestore.datasets.demo import make_demo_dataset

    summary = make_demo_dataset(Path(out), seed=seed, progress=not _quiet(quiet))
    click.echo(f"demo data -> {out}: {summary}")


@app.group()
def store():
    """Store maintenance."""


@store.command("gc")
@_store_option
@click.option("--dry-run", is_flag=True)
@click.option("--forget-missing", is_flag=True, help="forget registered runs whose folder, and the folder that held "
              "it, are gone (by default gc refuses: it cannot tell where they went)")
@_quiet_option
def store_gc(store, dry_run, forget_missing, quiet):
    """Delete feature folders that no view and no run fit on the store uses (old versions, configs); a run
    moved beside where it was is followed by its id."""
    from featurestore.store import FeatureStore

    stale = FeatureStore(default_store(store)).gc(dry_run=dry_run, forget_missing=forget_missing,
                                                  echo=(lambda *_: None) if _quiet(quiet) else click.echo)
    click.echo(f"{len(stale)} stale folder(s)")


def main(argv=None):
    try:
        app.main(args=argv, prog_name="siqa", standalone_mode=False)
    except SiqaError as exc:
        click.echo(f"siqa: error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("siqa: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
