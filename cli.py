"""siqa command line: features -> sql -> oof -> submit, plus predict, report, weights, doctor, demo-data, store gc.

Every user-facing problem is a `SiqaError`, printed as one line `siqa: error: <file>: <problem>`, exit 2.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from featurestore.errors import SiqaError
from siqa import DEFAULT_RUN, DEFAULT_STORE, default_store
from tabular.config import presets


def _store_option(f):
    return click.option("--store", "store", type=click.Path(file_okay=False), default=None,
                        help=f"feature store folder (default $SIQA_STORE or ./{DEFAULT_STORE})")(f)


def _config_option(f):
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                        help="TOML config (default configs/default.toml)")(f)


def _quiet_option(f):
    return click.option("--quiet", is_flag=True, help="no progress bars")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def app(verbose: bool):
    """Semantic image quality assessment: feature store + tabular AutoML."""
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
@_quiet_option
def features(data, root, splits, store, config_path, backend, address, strict, replace, allow_outside_root, quiet):
    """Compute every missing feature of a dataset into the store."""
    from featurestore.config import build_extractors, load_config
    from featurestore.datasets import load_pairs
    from featurestore.weights import check_weights

    config = load_config(config_path)
    extractors = build_extractors(config)
    if not extractors:
        raise SiqaError(f"{config['_path']}: no extractor enabled")
    check_weights(extractors)  # stops before any work, listing every missing weight
    table = load_pairs(data, splits=splits.split(",") if splits else None, root=root,
                       allow_outside_root=allow_outside_root)
    if backend == "ray":
        from featurestore.ray_backend import extract_with_ray

        summary = extract_with_ray(default_store(store), table, extractors, address=address, progress=not quiet,
                                   replace=replace)
    else:
        from featurestore.store import FeatureStore

        summary = FeatureStore(default_store(store)).extract(table, extractors, progress=not quiet, replace=replace)
    for line in summary.lines():
        click.echo(line)
    if strict and summary.failures:
        raise SiqaError(f"{data}: {len(summary.failures)} failure(s) during extraction (--strict)")


@app.command()
@click.argument("query", required=False)
@_store_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "parquet", "json"]), default="table")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="write the result here")
def sql(query, store, fmt, out):
    """Run SQL over the store's views (pairs, labels, <extractor>, features); no query: interactive shell."""
    from blend.sql import RUN_EXTENSIONS
    from featurestore import sql as fsql

    root = default_store(store)
    if query is None:
        from featurestore.sql.shell import interactive

        interactive(root, extensions=RUN_EXTENSIONS)
        return
    if fmt == "parquet" and not out:
        raise SiqaError("--format parquet needs --out FILE")
    if out:
        fsql.check_output(root, out)
    df = fsql.query(root, query, extensions=RUN_EXTENSIONS)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        text = df.to_csv(index=False)
    elif fmt == "json":
        text = df.to_json(orient="records", indent=1, default_handler=str)
    elif fmt == "parquet":
        df.to_parquet(out, index=False)
        click.echo(f"{len(df)} rows -> {out}")
        return
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200):
            text = df.to_string(index=False) + "\n"
    if out:
        Path(out).write_text(text)
        click.echo(f"{len(df)} rows -> {out}")
    else:
        click.echo(text, nl=False)


@app.command()
@_store_option
@click.option("--table", type=click.Path(dir_okay=False), default=None, help="bring-your-own feature table (CSV/Parquet)")
@click.option("--label", default=None, help="label column of --table")
@click.option("--group", default=None, help="group column of --table (folds never split a group)")
@click.option("--lower-better", is_flag=True, help="the label grows with distortion (DMOS)")
@click.option("--features", "feature_list", default=None, help="comma-separated feature columns (default: all numeric)")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), default=DEFAULT_RUN, show_default=True)
@_config_option
@click.option("--preset", type=click.Choice(presets()), default=None, help="override the config's preset")
@click.option("--seed", type=int, default=None)
@click.option("--time-limit", type=click.FloatRange(min=1), default=None,
              help="seconds: plan repeats and pool members to finish in time; says what it dropped")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of the leaderboard")
@click.option("--allow-missing", is_flag=True, help="learn even if labelled pairs lack some extractor's features")
@_quiet_option
def oof(store, table, label, group, lower_better, feature_list, run_dir, config_path, preset, seed, time_limit,
        as_json, allow_missing, quiet):
    """Grouped, nested out-of-fold evaluation of the model pool and blend; writes a run folder."""
    from blend.run import run_oof
    from featurestore.config import load_config
    from tabular.data import TabularData

    config = load_config(config_path)
    tab = dict(config.get("tabular") or {})
    if preset:
        tab["preset"] = preset
    if seed is not None:
        tab["seed"] = seed
    if time_limit is not None:
        tab["time_limit"] = time_limit
    columns = feature_list.split(",") if feature_list else None
    if table:
        if not label or not group:
            raise SiqaError("--table needs --label COL and --group COL")
        data = TabularData.from_table(table, label=label, group=group, lower_better=lower_better, features=columns)
    else:
        data = TabularData.from_store(default_store(store), features=columns, lower_better=lower_better)
    summary = run_oof(data, {**config, "tabular": tab}, Path(run_dir), progress=not (quiet or as_json),
                      allow_missing=allow_missing)
    if as_json:
        if time_limit is not None:
            click.echo(summary["plan"]["text"], err=True)
        click.echo(json.dumps(summary["headline"], sort_keys=True))
    else:
        click.echo(summary["leaderboard_text"])
        click.echo(f"run -> {run_dir}")
    from blend.report import write_report

    report_path = write_report(Path(run_dir), progress=not (quiet or as_json))
    if not as_json:
        click.echo(f"report -> {report_path}")


@app.command()
@click.option("--run", "run_dir", type=click.Path(file_okay=False), default=DEFAULT_RUN, show_default=True)
@click.option("--split", default="test", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="zip path (default RUN/submission.zip)")
@click.option("--cpu/--gpu", default=True, help="what readme.txt declares as the device")
@_quiet_option
def submit(run_dir, split, out, cpu, quiet):
    """Predict a split with the run's pipeline (refit on all labelled rows by `siqa oof`); write the validated zip."""
    from blend.submission import submit_run

    path, n = submit_run(Path(run_dir), split=split, out=Path(out) if out else None, cpu=cpu, progress=not quiet)
    click.echo(f"{n} predictions -> {path}")


@app.command()
@click.option("--run", "run_dir", type=click.Path(file_okay=False), default=DEFAULT_RUN, show_default=True)
@click.option("--ref", type=click.Path(dir_okay=False), default=None)
@click.option("--dist", type=click.Path(dir_okay=False), default=None)
@click.option("--pairs", type=click.Path(dir_okay=False), default=None, help="pairs table: predict every row")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="CSV for --pairs (default: stdout)")
@click.option("--allow-outside-root", is_flag=True, help="accept --pairs image paths outside the table's folder")
@_store_option
@_quiet_option
def predict(run_dir, ref, dist, pairs, out, allow_outside_root, store, quiet):
    """Score new pairs with a fitted run, computing missing features through the store."""
    from siqa import predict_pairs

    if pairs:
        from featurestore.datasets import load_pairs

        table = load_pairs(pairs, allow_outside_root=allow_outside_root)
    elif ref and dist:
        from featurestore.datasets import PairTable

        table = PairTable.from_paths([(ref, dist)], split="test")
    else:
        raise SiqaError("predict needs --ref IMG --dist IMG, or --pairs FILE")
    scores = predict_pairs(table, run=Path(run_dir), store=default_store(store), progress=not quiet)
    if not quiet:  # on stderr: stdout stays the score or the CSV, for scripts
        done = scores.attrs["extract"]
        click.echo(f"{len(scores)} pair(s) scored in {scores.attrs['seconds']:.1f}s ({sum(done.computed.values())} "
                   f"feature rows computed, {sum(done.cached.values())} reused from the store)", err=True)
    if ref and dist and not pairs:
        click.echo(f"{scores.score.iloc[0]:.4f}")
    elif out:
        scores.to_csv(out, index=False)
        click.echo(f"{len(scores)} predictions -> {out}")
    else:
        click.echo(scores.to_csv(index=False), nl=False)


@app.command()
@click.option("--run", "run_dir", type=click.Path(file_okay=False), default=DEFAULT_RUN, show_default=True)
@_quiet_option
def report(run_dir, quiet):
    """Write report.html and PNG plots for a run."""
    from blend.report import write_report

    click.echo(f"report -> {write_report(Path(run_dir), progress=not quiet)}")


@app.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False))
def trust(run_dir):
    """Sign a run folder from someone else with your key, so submit/predict/report will load its models
    (a run folder holds pickled models: trust only runs from people you trust)."""
    from blend.runfolder import trust as sign_run

    click.echo(f"{run_dir}: {sign_run(Path(run_dir))} file(s) signed with your key")


@app.command()
@_config_option
@click.option("--check", is_flag=True, help="exit non-zero when an enabled extractor has no weights here")
@click.option("--download", is_flag=True, help="fetch every weight the enabled extractors need")
@click.option("--to", "to", type=click.Path(file_okay=False), default=None,
              help="with --download: put them in DIR laid out as $SIQA_WEIGHTS_DIR (default: the libraries' caches)")
def weights(config_path, check, download, to):
    """Say, per configured extractor, whether its weights load here and from where; --download fetches them."""
    from featurestore.config import build_extractors, disabled_names, load_config
    from featurestore.weights import check_weights, describe_weights

    if to and not download:
        raise SiqaError("--to DIR goes with --download")
    config = load_config(config_path)
    disabled = disabled_names(config)
    if download:
        from featurestore.downloads import download_weights

        enabled = build_extractors(config)
        download_weights(enabled, Path(to).expanduser() if to else None, echo=click.echo)
        if to:
            click.echo(f"set SIQA_WEIGHTS_DIR={Path(to).expanduser().resolve()} so that siqa finds them there")
            return
    click.echo(describe_weights(build_extractors(config, include_disabled=True), disabled))
    if check:
        missing = [s for s in check_weights(build_extractors(config), strict=False) if s.found is None]
        if missing:
            names = sorted({s.what.split(": ", 1)[0] for s in missing})
            raise SiqaError(f"{config['_path']}: {len(missing)} weight(s) missing for enabled extractor(s) "
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
    from featurestore.config import build_extractors, load_config
    from featurestore.doctor import calibration_checks, format_checks, seiqa_cosine_check

    calib = Path(calib) if calib else Path(__file__).resolve().parent.parent / "shared" / "data" / "calib"
    checks = calibration_checks(build_extractors(load_config(config_path)), calib, Path(official) if official else None)
    if seiqa:
        labels = Path(seiqa_labels) if seiqa_labels else Path(seiqa) / "train_labels.csv"
        checks += seiqa_cosine_check(Path(seiqa), labels, progress=not quiet)
    click.echo(format_checks(checks))
    if any(c.failed for c in checks):
        sys.exit(1)


@app.command("demo-data")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True)
@_quiet_option
def demo_data(out, seed, quiet):
    """Write a small SeIQA-layout dataset made from real photos shipped in scikit-image / scikit-learn."""
    from featurestore.datasets.demo import make_demo_dataset

    summary = make_demo_dataset(Path(out), seed=seed, progress=not quiet)
    click.echo(f"demo data -> {out}: {summary}")


@app.group()
def store():
    """Store maintenance."""


@store.command("gc")
@_store_option
@click.option("--dry-run", is_flag=True)
def store_gc(store, dry_run):
    """Delete feature folders that no view and no existing run fit on the store uses (old versions, configs)."""
    from featurestore.store import FeatureStore

    stale = FeatureStore(default_store(store)).gc(dry_run=dry_run, echo=click.echo)
    click.echo(f"{len(stale)} stale folder(s)")


def main(argv=None):
    try:
        app.main(args=argv, prog_name="siqa", standalone_mode=False)
    except SiqaError as exc:
        click.echo(f"siqa: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("siqa: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
