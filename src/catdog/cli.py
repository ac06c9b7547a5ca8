"""The catdog command line: a thin edge over the core. Exit 0 on success, 2 on bad usage or input.

Heavy modules (PyTorch, ONNX Runtime) are imported inside the commands that need them, so
`catdog predict` and `catdog evaluate` never load PyTorch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad usage or unreadable input: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        command = self.prog.removeprefix("catdog").strip()  # "predict", or "" for catdog itself
        raise UsageError(f"{command}: {message}" if command else message)


def cmd_weights(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from catdog.ml.backbones import create_backbone, list_backbones
    from catdog.ml.backbones.base import ensure_onnx
    from catdog.settings import get_settings

    weights_dir = get_settings().weights_dir
    names = args.backbone or list_backbones()
    for name in tqdm(names, desc="weights", unit="backbone"):
        backbone = create_backbone(name, weights_dir)
        manifest = backbone.prepare()
        ensure_onnx(backbone, backbone.spec.default_precision)
        tqdm.write(f"{name}: ready in {backbone.dir} (from {manifest['source']})")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from catdog.ml.data import describe

    print(json.dumps(describe(Path(args.data)), indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from catdog.ml.artifacts import PLOTS_DIR, metrics_path, write_json
    from catdog.ml.evaluate import evaluate_model
    from catdog.ml.features import AugmentRecipe
    from catdog.ml.head import HeadConfig
    from catdog.ml.train import TrainConfig, train
    from catdog.settings import get_settings

    settings = get_settings()
    config = TrainConfig(
        data=args.data,
        out=args.out,
        backbone=args.backbone,
        precision=args.precision,
        epochs=args.epochs,
        views=args.views,
        seed=args.seed,
        head=HeadConfig(hidden=args.hidden, dropout=args.dropout),
        finetune_last_block=args.finetune_last_block,
        augment=AugmentRecipe(seed=args.seed),
    )
    result = train(config, settings=settings)
    summary: dict[str, Any] = {
        "model_dir": str(result.model_dir),
        "best_epoch": result.best_epoch,
        "val_accuracy": result.history[result.best_epoch - 1]["val_accuracy"],
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
    }
    test_dir = Path(args.data) / "test"
    if not args.no_eval and (test_dir / "cats").is_dir():
        metrics = evaluate_model(
            result.model_dir,
            test_dir,
            settings=settings,
            plots_dir=result.model_dir / PLOTS_DIR,
            history=result.history,
        )
        write_json(metrics_path(result.model_dir, metrics["model"]["precision"]), metrics)
        summary["test"] = {k: metrics[k] for k in ("accuracy", "roc_auc", "f1", "log_loss", "n")}
    if not args.no_register:
        summary["registered_version"] = _register_trained(
            config, result, metrics if "test" in summary else {}, settings
        )
    print(json.dumps(summary, indent=2))
    return 0


def _register_trained(config: Any, result: Any, metrics: dict[str, Any], settings: Any) -> int:
    """An MLflow run for this training and a registered model version (no alias moves); settings: a Settings."""
    from catdog.ml.artifacts import ModelConfig
    from catdog.registry import Registry, training_dataset

    registry = Registry(settings)
    registry.bootstrap()  # the shipped models are versions 1 and 2 on a fresh registry
    dataset = training_dataset(ModelConfig.load(result.model_dir).data, "catdog-train")
    version = registry.log_training_run(
        result.model_dir,
        source="train",
        params=config.to_dict(),
        history=result.history,
        test_metrics=metrics,
        dataset=dataset,
    )
    print(f"registered as version {version.version} ({version.model_version})", file=sys.stderr)
    return version.version


def cmd_evaluate(args: argparse.Namespace) -> int:
    from catdog.ml.artifacts import PLOTS_DIR, metrics_path, write_json
    from catdog.ml.evaluate import evaluate_model
    from catdog.settings import get_settings

    model_dir = Path(args.model)
    if args.save and not args.force:
        _refuse_to_replace_another_evaluation(model_dir, Path(args.data))
    plots_dir = model_dir / PLOTS_DIR if args.save else None
    metrics = evaluate_model(
        model_dir,
        Path(args.data),
        settings=get_settings(),
        plots_dir=plots_dir,
        progress=not args.json,
        precision=args.precision,
    )
    ran = metrics["model"]["precision"]
    if args.save:
        write_json(metrics_path(model_dir, ran), metrics)  # "precision" itself is the classification metric
    if args.json:
        keys = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "n")
        summary = {k: metrics[k] for k in keys}
        print(json.dumps({**summary, "confusion_matrix": metrics["confusion_matrix"], "inference_precision": ran}))
    else:
        print(_metrics_table(metrics) + f"\ngraph      {ran} ({metrics['model']['version']})")
    return 0


def _refuse_to_replace_another_evaluation(model_dir: Path, data: Path) -> None:
    """--save replaces the figures a model is known by: only with the same test data, or --force."""
    from catdog.ml.artifacts import METRICS_JSON
    from catdog.ml.data import load_split, resolve_split

    saved = sorted(model_dir.glob("metrics*.json"))
    if not saved:
        return
    recorded = json.loads((model_dir / METRICS_JSON if (model_dir / METRICS_JSON).is_file() else saved[0]).read_text())
    before = (recorded.get("data") or {}).get("fingerprint")
    after = load_split(resolve_split(data, "test")).fingerprint()
    if before and before != after:
        raise UsageError(
            f"{model_dir} was evaluated on other data ({recorded.get('n')} images, {recorded['data'].get('root')}); "
            "--save would replace those figures: pass --force to do so"
        )


def _metrics_table(metrics: dict[str, Any]) -> str:
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    rows = [
        f"{k:<10} {metrics[k]:.4f}"
        for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
        if metrics[k] is not None
    ]
    return "\n".join(
        [
            f"n          {metrics['n']}",
            *rows,
            f"confusion  cats: {tn} right, {fp} called dog; dogs: {tp} right, {fn} called cat",
        ]
    )


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify each file; a file that cannot be read or decoded does not stop the others.

    Each file is read once, so `-` (standard input), /dev/stdin and pipes (`<(cat photo.jpg)`) work. A bad file gets
    one line on stderr, `catdog: error: cannot read NAME: reason`, every other file is predicted
    (stdout: one line, or one JSON object with --json, per file), and the exit status is 2 at
    the end when any file failed, else 0. Names that are not valid UTF-8 are printed with \\xNN
    escapes (text, JSON and error lines alike).
    """
    from catdog.ml.predictor import Predictor
    from catdog.settings import get_settings

    settings = get_settings()
    precision = getattr(args, "precision", None) or settings.precision
    predictor = Predictor(Path(args.model), precision=precision, cache_dir=settings.cache_dir)
    failed = 0
    for start in range(0, len(args.files), 64):  # bounded memory: 64 files' bytes at a time
        for name, result in _predict_each(predictor, args.files[start : start + 64]):
            if isinstance(result, str):
                failed += 1
                print(f"catdog: error: cannot read {name}: {result}", file=sys.stderr)
            elif args.json:
                print(json.dumps(result))
            else:
                pet = "" if result["is_pet"] in (None, True) else "  (does not look like a cat or dog)"
                print(f"{name}: {result['predicted_class']} ({result['confidence']:.1%}){pet}")
    return EXIT_USAGE if failed else 0


def _predict_each(predictor: Any, files: Sequence[str]) -> list[tuple[str, dict[str, Any] | str]]:
    """(printable name, Prediction.to_dict() or the one-line reason it failed) per file, in order.

    predictor: a catdog.ml.predictor.Predictor. The files are predicted from their bytes in one
    call; only when one of them cannot be decoded are they predicted one by one to find it.
    """
    from catdog.ml.preprocessing import ImageDecodeError

    names = [file.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for file in files]
    outcome: dict[int, dict[str, Any] | str] = {}
    blobs: dict[int, bytes] = {}
    for i, file in enumerate(files):
        try:
            blobs[i] = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
        except OSError as exc:
            outcome[i] = exc.strerror or str(exc)
    try:
        predictions = predictor.predict(list(blobs.values()), names=[names[i] for i in blobs])
        outcome.update((i, p.to_dict()) for i, p in zip(blobs, predictions, strict=True))
    except ImageDecodeError:
        for i, blob in blobs.items():
            try:
                outcome[i] = predictor.predict([blob], names=[names[i]])[0].to_dict()
            except ImageDecodeError as exc:
                outcome[i] = str(exc)
    return [(names[i], outcome[i]) for i in range(len(files))]


def cmd_build(args: argparse.Namespace) -> int:
    from catdog.ml.export import build_graphs
    from catdog.settings import get_settings

    weights_dir = get_settings().weights_dir
    for model in args.models:
        for graph in build_graphs(Path(model), weights_dir):
            print(f"{graph.path}  ({graph.precision}, {graph.seconds:.1f} s)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from catdog.web.server import serve

    return serve(model=args.model_dir, host=args.host, port=args.port, workers=args.workers)


def cmd_worker(args: argparse.Namespace) -> int:
    """Consume retraining jobs from the queue (CATDOG_QUEUE_URL) until interrupted, at a lower CPU priority."""
    from catdog.jobs.worker import run_worker
    from catdog.settings import get_settings
    from catdog.web.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return run_worker(settings, parent_pid=args.with_parent)


def cmd_reference(args: argparse.Namespace) -> int:
    """Write MODEL/drift_reference.npz: the test split's P(dog) and training-image features (catdog.ml.drift)."""
    from catdog.ml.drift import DriftReference, build_reference
    from catdog.settings import get_settings

    path = build_reference(
        Path(args.model), Path(args.data), settings=get_settings(), sample=args.sample, seed=args.seed
    )
    reference = DriftReference.load(path)
    summary = {
        "reference": str(path),
        "bytes": path.stat().st_size,
        "features_train": {precision: list(values.shape) for precision, values in reference.features_train.items()},
        "p_dog_test": None if reference.p_dog_test is None else len(reference.p_dog_test),
        "notes": reference.meta.get("notes", []),
    }
    print(json.dumps(summary, indent=2))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """The model registry (MLflow): list versions, promote one to production, roll production back one step,
    move the promotion gate's reference version (upwards only; CATDOG_GATE_REFERENCE overrides it).

    The shipped models are registered first when the registry has never seen them (as `catdog serve` does).
    """
    from catdog.registry import Registry
    from catdog.settings import get_settings

    registry = Registry(get_settings())
    registered = registry.bootstrap()
    if args.action == "promote":
        new, previous = registry.promote(args.registry_version, reason="manual (CLI)")
        was = f"was version {previous}" if previous is not None else "there was none"
        print(f"production -> version {new} ({was})")
    elif args.action == "rollback":
        new, old = registry.rollback()
        print(f"production -> version {new} (rolled back from version {old})")
    elif args.action == "reference":
        new, previous = registry.set_reference(args.registry_version, set_by="admin (CLI)")
        print(f"gate reference -> version {new} (was {'none' if previous is None else f'version {previous}'})")
        if registry.settings.gate_reference is not None:
            print(f"note: CATDOG_GATE_REFERENCE={registry.settings.gate_reference} overrides it", file=sys.stderr)
    elif args.json:
        listing = {"aliases": registry.aliases(), "versions": [v.to_dict() for v in registry.versions()]}
        print(json.dumps(listing | {"reference": registry.reference().to_dict()}))
    else:
        for info in registered:
            print(f"registered shipped model {info.model_version} as version {info.version}", file=sys.stderr)
        rows = [("version", "model_version", "backbone", "aliases", "accuracy", "source", "created")]
        for v in registry.versions():
            accuracy = v.metrics.get("accuracy")
            rows.append(
                (
                    str(v.version),
                    v.model_version,
                    v.backbone,
                    ",".join(v.aliases) or "-",
                    "-" if accuracy is None else f"{accuracy:.4f}",
                    v.source,
                    v.created_at,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from catdog import __version__

    parser = _Parser(prog="catdog", description="Cats vs dogs: train, evaluate, predict.")
    parser.add_argument("--version", action="version", version=f"catdog {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("weights", help="fetch and convert pretrained backbones (cached)")
    p.add_argument("--backbone", action="append", help="only this backbone (repeatable)")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("data", help="counts, sizes, duplicates and unreadable files of a data folder")
    p.add_argument("data", help="DIR/{train,test}/{cats,dogs} or DIR/{cats,dogs}")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train a head on a frozen backbone and write a model directory")
    p.add_argument("--data", required=True, help="DIR/train/{cats,dogs} (or DIR/{cats,dogs})")
    p.add_argument("--backbone", default="vgg16")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--epochs", type=_positive_int, default=60)
    p.add_argument("--views", type=_positive_int, default=2, help="feature views per image (1 = no augmentation)")
    _add_precision(p)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--hidden", type=_int_list, default=(256, 128), help="head layer widths, e.g. 256,128")
    p.add_argument("--dropout", type=_float_list, default=(0.5, 0.3), help="dropout after each layer, e.g. 0.5,0.3")
    p.add_argument("--no-eval", action="store_true", help="skip evaluating on DIR/test")
    p.add_argument("--no-register", action="store_true", help="do not log an MLflow run nor register a version")
    p.add_argument(
        "--finetune-last-block",
        action="store_true",
        help="also fine-tune the backbone's last block (vgg16: block 5; slow without a GPU)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a model on DIR/test or DIR/{cats,dogs}")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument(
        "--save", action="store_true", help="write metrics.json (metrics_int8.json) and plots into the model"
    )
    p.add_argument("--force", action="store_true", help="with --save: replace an evaluation made on other data")
    _add_precision(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify image files")
    p.add_argument("--model", default=None, help="model directory (default: the shipped vgg16)")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_precision(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("worker", help="run retraining jobs from the queue (make run starts one beside the server)")
    p.add_argument(
        "--with-parent",
        metavar="PID",
        type=_positive_int,
        default=None,
        help="end when process PID ends, however it ends (catdog serve starts its worker so)",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("serve", help="start the web platform (pages, API, monitoring) on CATDOG_HOST:CATDOG_PORT")
    p.add_argument("--model", dest="model_dir", default=None, help="model directory (default: the shipped vgg16)")
    p.add_argument("--host", default=None, help="address to listen on (default: CATDOG_HOST, 127.0.0.1)")
    p.add_argument("--port", type=_port, default=None, help="port (default: CATDOG_PORT, 8000)")
    p.add_argument("--workers", type=_positive_int, default=None, help="worker processes (default: CATDOG_WORKERS, 1)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("build", help="(re)build model.onnx and model_int8.onnx of model directories")
    p.add_argument("models", nargs="+")
    p.set_defaults(func=cmd_build)
    p = sub.add_parser("reference", help="write a model's drift reference (test-split P(dog), training features)")
    p.add_argument("--model", required=True, help="model directory to write drift_reference.npz into")
    p.add_argument("--data", required=True, help="DIR/{train,test}/{cats,dogs} (or DIR/{cats,dogs}: no test part)")
    p.add_argument("--sample", type=_positive_int, default=512, help="training images whose features are kept")
    p.add_argument("--seed", type=int, default=0, help="seed of the training-image sample")
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser("models", help="the model registry (MLflow): list versions, promote, roll back, gate reference")
    models = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    q = models.add_parser("list", help="every registered version, newest first")
    q.add_argument("--json", action="store_true", help="one JSON object: aliases and versions")
    q = models.add_parser("promote", help="make VERSION production (rollback undoes it)")
    q.add_argument("registry_version", metavar="VERSION", type=_positive_int, help="registered model version number")
    models.add_parser("rollback", help="production goes back to the version before the last promotion")
    q = models.add_parser(
        "reference", help="make VERSION the promotion gate's reference (only to one at least as accurate)"
    )
    q.add_argument("registry_version", metavar="VERSION", type=_positive_int, help="registered model version number")
    p.set_defaults(func=cmd_models)
    return parser


def _add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "int8"],
        default=None,
        help="graph to run: auto = int8 where the CPU has int8 dot products (default: CATDOG_PRECISION, auto)",
    )


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = _integer(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1..65535, got {value}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(_positive_int(part) for part in text.split(",") if part)


def _float_list(text: str) -> tuple[float, ...]:
    values = tuple(float(part) for part in text.split(",") if part)
    if not all(0.0 <= v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"dropout rates must be in [0, 1), got {text}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    from catdog.errors import CatdogError, UsageProblem

    try:
        from catdog.settings import get_settings

        args = build_parser().parse_args(argv)
        settings = get_settings()  # a bad CATDOG_* value stops here, with one line
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
        )
        if getattr(args, "model", "") is None:
            args.model = str(settings.default_model_dir)
        return int(args.func(args))
    except (UsageError, UsageProblem, FileNotFoundError) as exc:
        print(f"catdog: error: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_USAGE
    except CatdogError as exc:
        print(f"catdog: error: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("catdog: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `catdog models list --json | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
