"""`galexplore ...` sub-commands: argument parsing only, thin over the packages.

Each sub-command imports its package lazily, so `galexplore --help` is instant and
`galexplore info` never imports torch or panel.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from galexplore.errors import GalexploreError


def _cmd_sample(args: argparse.Namespace) -> int:
    from galexplore.mock.universe import UniverseConfig, build_universe

    config = UniverseConfig(
        n_galaxies=args.n_galaxies,
        views=args.views,
        seed=args.seed,
        snr=args.snr,
        disturbed_fraction=args.disturbed_fraction,
        environment_coupling=args.environment_coupling,
        storage=args.storage,
    )
    build_universe(config, args.out, workers=args.workers, scheduler=args.scheduler, progress=True,
                   overwrite=args.overwrite)
    print(f"wrote {args.out}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from galexplore.data.dataset import describe, open_dataset

    dataset = open_dataset(args.path)
    report = dataset.verify(full=args.verify)
    if report.ok:
        print(describe(dataset))
    print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _cmd_import_fits(args: argparse.Namespace) -> int:
    from galexplore.data.fits_io import import_fits

    hdu = int(args.hdu) if args.hdu is not None and args.hdu.lstrip("-").isdigit() else args.hdu
    report = import_fits(args.sources, args.out, args.channel, hdu=hdu, moments=args.moments,
                         threshold=args.threshold, storage=args.storage, overwrite=args.overwrite)
    n_files = len(report.imported) + len(report.skipped)
    print(f"imported {len(report.imported)} of {n_files} FITS files into {report.path}")
    for file, reason in report.skipped:
        print(f"galexplore: skipped {file}: {reason}", file=sys.stderr)
    return 1 if report.skipped else 0


def _cmd_env_from_catalog(args: argparse.Namespace) -> int:
    from galexplore.mock.environment import environment_dataset_from_catalog

    environment_dataset_from_catalog(
        args.catalog,
        args.out,
        n_targets=args.n_targets,
        seed=args.seed,
        ra_column=args.ra_column,
        dec_column=args.dec_column,
        distance_column=args.distance_column,
        redshift_column=args.redshift_column,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from galexplore.training.loops import TrainConfig, train_from_cli

    config = TrainConfig(
        kind=args.kind,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        device=args.device,
        targets=args.target or [],
        channels=args.channel or [],
        latent_dim=args.latent_dim,
        noisy_labels=args.noisy_labels,
        images_per_epoch=args.images_per_epoch,
        lr_halving_epochs=args.lr_halving_epochs,
    )
    out = train_from_cli(config, args.dataset, args.out)
    print(f"wrote {out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from galexplore.analysis.evaluate import evaluate_model

    report = evaluate_model(args.model, args.dataset, device=args.device, recipe=args.recipe)
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        from galexplore.analysis.evaluate import format_report

        print(format_report(report))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from galexplore.analysis.embed import embed
    from galexplore.analysis.inference import on_workers
    from galexplore.parallel import open_engine

    with open_engine(args.workers, args.scheduler) as engine, on_workers(engine):
        path = embed(args.model, args.dataset, device=args.device, batch_size=args.batch_size,
                     force=args.force, progress=True)
    print(f"wrote {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from galexplore.explorer.exports import export_command

    written = export_command(args.dataset, args.model, args.out, ids_file=args.ids, query=args.query,
                             status_callback=lambda text: print(f"galexplore: {text}", file=sys.stderr))
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    from galexplore.models import zoo

    if args.zoo_command == "list":
        print(zoo.describe_zoo())
    elif args.zoo_command == "import-dawson2020":
        out = zoo.import_dawson2020(args.source, out=args.out, trust_pickle=args.trust_pickle)
        print(f"wrote {out}")
    elif args.zoo_command == "fetch":
        print(zoo.fetch(args.name))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import time

    started = time.monotonic()
    print("galexplore: [ 0.0 s] starting the explorer: importing Panel", file=sys.stderr, flush=True)
    from galexplore.ui.layout import serve

    if args.allow_remote:
        print("galexplore: warning: --allow-remote serves the explorer to every host that can reach this "
              "machine, without authentication; anyone there can open your allowed directories and run "
              "training jobs. Use it only on a trusted network.", file=sys.stderr)
    serve(dataset=args.dataset, model=args.model, port=args.port, show=not args.no_browser,
          allowed_dirs=args.allow, allow_remote=args.allow_remote, started=started)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galexplore", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="build a mock universe of KinMS-observed galaxies")
    p.add_argument("out", type=Path)
    p.add_argument("--n-galaxies", type=int, default=2000)
    p.add_argument("--views", type=int, default=2, help="observations per galaxy (the paper used 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snr", type=float, default=None, help="S/N of eq. 2 (default: noiseless)")
    p.add_argument("--disturbed-fraction", type=float, default=0.6,
                   help="mean fraction of galaxies with disturbed gas (sets the kappa imbalance)")
    p.add_argument("--environment-coupling", type=float, default=1.0,
                   help="how strongly dense environments raise the chance of disturbed gas (0 = none)")
    p.add_argument("--storage", choices=["compact", "float32", "float16"], default="float32",
                   help="compact: quantised and compressed maps, ~4 kB each; float32 / float16: raw, "
                        "memory-mapped, 64 / 32 kB each")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes of a local dask cluster (default: all cores; 1: this process only)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS|local",
                   help="run on a dask scheduler (tcp://host:8786) or a local cluster")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("info", help="summarise a dataset directory; exit status 1 if a file it lists is "
                                    "missing or damaged")
    p.add_argument("path", type=Path)
    p.add_argument("--verify", action="store_true",
                   help="read every file: compare checksums, decode every map chunk, read the catalogue")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("import-fits", help="build a dataset from FITS velocity maps or cubes; exit status 1 "
                                           "if some files were skipped (each is reported)")
    p.add_argument("sources", nargs="+", type=Path, metavar="FILES_OR_DIR",
                   help="FITS files, or directories whose FITS files are imported")
    p.add_argument("out", type=Path, help="dataset directory to write")
    p.add_argument("--hdu", default=None, help="HDU number or name (default: the first image HDU with data)")
    p.add_argument("--channel", action="append", choices=["mom0", "mom1", "mom2"],
                   help="the channel a 2-D map is stored as (default mom1); with --moments, the moments to "
                        "keep (repeatable; default all three)")
    p.add_argument("--moments", action="store_true", help="the files are spectral cubes: store their moment maps")
    p.add_argument("--threshold", type=float, default=None,
                   help="with --moments: leave voxels at or below this intensity (cube units) out")
    p.add_argument("--storage", choices=["float32", "float16", "compact"], default="float32")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_import_fits)

    p = sub.add_parser("env-from-catalog", help="environment maps and measures from a real catalogue")
    p.add_argument("catalog", type=Path, help="CSV or Parquet with RA, Dec and distance or redshift")
    p.add_argument("out", type=Path)
    p.add_argument("--n-targets", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ra-column", default=None)
    p.add_argument("--dec-column", default=None)
    p.add_argument("--distance-column", default=None, help="distance in Mpc")
    p.add_argument("--redshift-column", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_env_from_catalog)

    p = sub.add_parser("train", help="train a CAE, VAE or CNN regressor on a dataset")
    p.add_argument("kind", choices=["cae", "cae-free", "vae", "regressor"])
    p.add_argument("dataset", type=Path)
    p.add_argument("out", type=Path, help="checkpoint directory to write")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--target", action="append", help="regression target column (repeatable)")
    p.add_argument("--channel", action="append", help="input channel (repeatable)")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--noisy-labels", action="store_true", help="train distances on D_z (Quigley et al.)")
    p.add_argument("--images-per-epoch", type=int, default=6400)
    p.add_argument("--lr-halving-epochs", type=int, default=30,
                   help="epochs between halvings of the learning rate (30 in Dawson et al. 2020)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="print the papers' metrics for a model on a dataset")
    p.add_argument("model", help="checkpoint directory or zoo name")
    p.add_argument("dataset", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--recipe", help="preprocessing instead of the card's, e.g. dawson2020_noisy for S/N 10 maps "
                   "(Dawson et al. 2020 sec. 2.4)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("embed", help="compute (or read from cache) a model's embedding of a dataset")
    p.add_argument("model", help="checkpoint directory or zoo name")
    p.add_argument("dataset", type=Path)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--force", action="store_true", help="recompute even if cached")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes of a local dask cluster (default 1: this process, all cores)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS|local",
                   help="run on a dask scheduler (tcp://host:8786) or a local cluster")
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("export", help="export rows of a dataset with a model's embedding, units and provenance")
    p.add_argument("dataset", type=Path)
    p.add_argument("model", help="checkpoint directory or zoo name")
    chosen = p.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--ids", type=Path, metavar="FILE", help="text file of catalogue ids (one per line, or a CSV "
                        "with an id column)")
    chosen.add_argument("--query", metavar="EXPR", help="rows where EXPR holds, e.g. 'kappa < 0.5 and pred_class == 1'")
    p.add_argument("out", type=Path, help="OUT.zip (CSV + provenance in one archive) or OUT.csv (provenance beside)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("zoo", help="published encoders")
    zsub = p.add_subparsers(dest="zoo_command", required=True)
    zsub.add_parser("list", help="list zoo entries and whether they are installed")
    zi = zsub.add_parser("import-dawson2020", help="convert the published Dawson et al. 2020 pickles once")
    zi.add_argument("source", type=Path, help="directory with CAE_Epoch_300.pt and PCA_routine.pkl")
    zi.add_argument("--out", type=Path, default=None, help="default: the zoo cache (GALEXPLORE_DATA_DIR)")
    zi.add_argument("--trust-pickle", action="store_true",
                    help="allow unpickling these files (it can run code: only for files you trust)")
    zf = zsub.add_parser("fetch", help="download a zoo entry into the cache (needs internet)")
    zf.add_argument("name")
    p.set_defaults(func=_cmd_zoo)

    p = sub.add_parser("serve", help="open the explorer in the browser")
    p.add_argument("--dataset", type=Path, default=None, help="default: the shipped sample universe")
    p.add_argument("--model", default=None, help="checkpoint directory or zoo name")
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--allow", metavar="DIR", type=Path, action="append", default=[],
                   help="a directory the page may open datasets and checkpoints from (repeatable)")
    p.add_argument("--allow-remote", action="store_true",
                   help="listen on every interface and accept other hosts (no authentication: trusted networks only)")
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GalexploreError as err:
        print(f"galexplore: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("galexplore: interrupted", file=sys.stderr)
        return 130
