"""Write cats_vs_dogs_classification.ipynb (unexecuted) from the cells below.

Regenerate after editing: `.venv/bin/python notebook/build_notebook.py`. Cell ids are fixed so a
rebuild without edits leaves the file unchanged. Every step calls the catdog library; the
notebook only shows what the library does and what it produced.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "cats_vs_dogs_classification.ipynb"


def md(text: str) -> NotebookNode:
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str, tags: list[str] | None = None) -> NotebookNode:
    cell = nbformat.v4.new_code_cell(textwrap.dedent(text).strip())
    if tags:
        cell.metadata["tags"] = tags
    return cell


CELLS: list[NotebookNode] = [
    md(
        """
        # Cats vs dogs: the whole pipeline, through the `catdog` library

        This notebook trains, evaluates, saves and uses a cats-vs-dogs classifier with the project's
        own code, step by step, so every figure here is what `catdog train`, `catdog evaluate` and
        `catdog predict` would produce on the same data:

        1. **the data**: class balance, image sizes, a sample of images, duplicates, unreadable files;
        2. **preprocessing**: decoding and resizing, the augmented views, the backbone's normalization;
        3. **build and train**: a frozen ImageNet backbone whose pooled features are computed once and
           cached, then a small MLP head (Dense 256, Dropout 0.5, Dense 128, Dropout 0.3, Dense 1);
        4. **evaluate** on the held-out test split: accuracy, precision, recall, F1, ROC-AUC, log loss,
           the classification report, the confusion matrix, the ROC curve and the worst mistakes;
        5. **save**: the self-describing model directory (`model.onnx`, `model_config.json`, ...);
        6. **predict** new images with ONNX Runtime alone.

        Parameters come from environment variables (next cells), so the same notebook runs on the full
        data set or, in the test suite, on a few fixture images: `CATDOG_NOTEBOOK_DATA`,
        `CATDOG_NOTEBOOK_EPOCHS`, `CATDOG_NOTEBOOK_BACKBONE`, `CATDOG_NOTEBOOK_VIEWS`,
        `CATDOG_NOTEBOOK_OUT`.

        **Run time.** The backbone is frozen, so almost all the time goes into computing its features,
        once per image: VGG16 runs about 2 images/s on a 2-core AVX2 CPU (about an hour for the 8,000
        training images on a first run; a re-run finds them in the feature cache and takes minutes).
        `CATDOG_NOTEBOOK_BACKBONE=efficientnet_lite0` is about 30 times faster.
        """
    ),
    code(
        """
        import json
        import os
        import textwrap
        from pathlib import Path

        import matplotlib.pyplot as plt
        import numpy as np
        from IPython.display import Image as PNG
        from IPython.display import Markdown, display

        from catdog.ml.artifacts import CONFIG_JSON, METRICS_JSON, PLOTS_DIR, write_json
        from catdog.ml.backbones import backbone_spec
        from catdog.ml.data import load_split
        from catdog.ml.evaluate import evaluate_model
        from catdog.ml.features import AugmentRecipe
        from catdog.ml.head import Head
        from catdog.ml.plots import training_curves_plot
        from catdog.ml.predictor import Predictor
        from catdog.ml.preprocessing import load_image, open_image
        from catdog.ml.train import TrainConfig, train
        from catdog.settings import get_settings

        # figures inline, whatever backend the kernel started with
        %matplotlib inline


        def table(headers, rows):
            \"\"\"Show rows as a Markdown table.\"\"\"
            lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
            display(Markdown("\\n".join(lines)))
        """
    ),
    code(
        """
        # Parameters (papermill-style tag "parameters"); paths are relative to this notebook's folder.
        DATA_DIR = Path(os.environ.get("CATDOG_NOTEBOOK_DATA", "../../shared/data/catsdogs"))
        EPOCHS = int(os.environ.get("CATDOG_NOTEBOOK_EPOCHS", "60"))
        BACKBONE = os.environ.get("CATDOG_NOTEBOOK_BACKBONE", "vgg16")
        VIEWS = int(os.environ.get("CATDOG_NOTEBOOK_VIEWS", "1"))
        OUT_DIR = Path(os.environ.get("CATDOG_NOTEBOOK_OUT", "../.cache/notebook_model"))
        """,
        tags=["parameters"],
    ),
    code(
        """
        DATA_DIR, OUT_DIR = DATA_DIR.resolve(), OUT_DIR.resolve()
        if not (DATA_DIR / "train" / "cats").is_dir() or not (DATA_DIR / "test" / "cats").is_dir():
            raise FileNotFoundError(f"{DATA_DIR} needs train/{{cats,dogs}} and test/{{cats,dogs}}")
        spec = backbone_spec(BACKBONE)
        SETTINGS = get_settings()  # the CATDOG_* variables: weights and feature caches, threads, precision
        print(f"data:     {DATA_DIR}")
        print(f"model to: {OUT_DIR}")
        print(f"backbone: {spec.name} ({spec.feature_dim} pooled features, {spec.input_size} px input)")
        print(f"epochs:   {EPOCHS}, feature views per training image: {VIEWS}")
        """
    ),
    md(
        """
        ## 1. The data

        `catdog.ml.data.load_split` reads one `cats/` + `dogs/` folder: it hashes every file (the hash is
        the feature-cache key and finds byte-identical duplicates), reads each image's size without
        decoding its pixels, and skips unreadable files with a reason instead of crashing.
        `catdog data DIR` prints the same report (`catdog.ml.data.describe`).
        """
    ),
    code(
        """
        splits = {name: load_split(DATA_DIR / name) for name in ("train", "test")}
        reports = {name: split.report() for name, split in splits.items()}
        table(
            ["split", "cats", "dogs", "images", "width min / mean / max", "height min / mean / max",
             "duplicate groups", "skipped"],
            [
                [name, r["counts"]["cat"], r["counts"]["dog"], r["n"],
                 "{min} / {mean} / {max}".format(**r["width"]), "{min} / {mean} / {max}".format(**r["height"]),
                 r["duplicate_groups"], r["skipped"]]
                for name, r in reports.items()
            ],
        )
        """
    ),
    code(
        """
        fig, (balance_ax, size_ax) = plt.subplots(1, 2, figsize=(11, 3.6))
        names = list(splits)
        positions = np.arange(len(names))
        for offset, cls in ((-0.2, "cat"), (0.2, "dog")):
            counts = [reports[name]["counts"][cls] for name in names]
            bars = balance_ax.bar(positions + offset, counts, width=0.4, label=f"{cls}s")
            balance_ax.bar_label(bars)
        balance_ax.set_xticks(positions, names)
        balance_ax.set_title("class balance")
        balance_ax.legend()
        samples = [s for split in splits.values() for s in split.samples]
        size_ax.hist([s.width for s in samples], bins=30, alpha=0.6, label="width")
        size_ax.hist([s.height for s in samples], bins=30, alpha=0.6, label="height")
        size_ax.set_xlabel("pixels")
        size_ax.set_title(f"image sizes ({len(samples)} images; all are resized to {spec.input_size} px)")
        size_ax.legend()
        plt.show()
        """
    ),
    code(
        """
        rng = np.random.default_rng(0)
        train_samples = splits["train"].samples
        picks = rng.choice(len(train_samples), size=min(12, len(train_samples)), replace=False)
        fig, axes = plt.subplots(2, 6, figsize=(13, 5))
        for ax in axes.ravel():
            ax.axis("off")
        for ax, i in zip(axes.ravel(), picks, strict=False):
            sample = train_samples[i]
            ax.imshow(load_image(sample.path, 160))
            ax.set_title(f"{sample.class_name}\\n{sample.width}x{sample.height}", fontsize=9)
        fig.suptitle("random training images (squashed to a square, as the model sees them)")
        plt.show()
        """
    ),
    code(
        """
        for name, split in splits.items():
            groups = split.duplicate_groups()
            extra = sum(len(group) - 1 for group in groups)
            print(f"{name}: {len(groups)} groups of byte-identical files ({extra} extra copies)")
            for group in groups[:5]:
                print("   ", ", ".join(f"{p.parent.name}/{p.name}" for p in group))
            if len(groups) > 5:
                print(f"    ... and {len(groups) - 5} more groups")
        train_hashes = {s.sha256 for s in splits["train"].samples}
        leaked = [s for s in splits["test"].samples if s.sha256 in train_hashes]
        print(f"test images whose exact bytes are also in train: {len(leaked)}")
        print("(training keeps one copy per content, so a duplicate never lands on both sides of the validation split)")
        for name, split in splits.items():
            print(f"{name}: {len(split.skipped)} unreadable files skipped")
            for path, why in split.skipped[:10]:
                print(f"    {path.parent.name}/{path.name}: {why[:100]}")
        """
    ),
    md(
        """
        ## 2. Preprocessing

        `catdog.ml.preprocessing.load_image` is the one place where files become model input, for training,
        evaluation and serving alike: it decodes (JPEG draft mode shrinks large photos while decoding),
        applies the EXIF orientation and squashes the image to a square, so the whole animal stays in
        frame. Training can add augmented **views** (`catdog.ml.features.AugmentRecipe.view`): view 0 is the
        plain image, view k > 0 a random rotation, zoom, shift and flip fixed by (seed, image content, k),
        so a view's features are cached like the plain ones. Each backbone then wants its own pixel
        normalization, stored as plain data in the model's config.
        """
    ),
    code(
        """
        sample = splits["train"].samples[0]
        original = open_image(sample.path)
        image = load_image(sample.path, spec.input_size)
        recipe = AugmentRecipe()
        views = [recipe.view(image, sample.sha256, k) for k in range(1, 9)]
        fig, axes = plt.subplots(2, 5, figsize=(13, 5.6))
        panels = [(original, f"file {original.width}x{original.height}"), (image, f"view 0: {spec.input_size} px")]
        panels += [(view, f"view {k}") for k, view in enumerate(views, start=1)]
        for ax, (picture, title) in zip(axes.ravel(), panels, strict=False):
            ax.imshow(picture)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        used = "view 0 only" if VIEWS == 1 else f"views 0 to {VIEWS - 1}"
        fig.suptitle(f"{sample.path.name}: the plain image and augmented views (this training uses {used})")
        plt.show()
        print("augmentation recipe:", recipe)
        """
    ),
    code(
        """
        normalization = spec.normalization
        print(f"{spec.name} normalization: {normalization.to_dict()}")
        x = normalization(image[None])  # uint8 NHWC RGB -> float32 NCHW
        print(f"model input: shape {x.shape}, dtype {x.dtype}")
        channels = normalization.channel_order
        table(
            ["channel", "mean subtracted", "divided by", "min", "mean", "max"],
            [
                [channels[c], normalization.mean[c], normalization.std[c],
                 f"{x[0, c].min():.1f}", f"{x[0, c].mean():.1f}", f"{x[0, c].max():.1f}"]
                for c in range(3)
            ],
        )
        """
    ),
    md(
        """
        ## 3. Build and train

        `catdog.ml.train.train` takes a `TrainConfig`: it loads the pretrained backbone (ONNX graph, frozen),
        computes the pooled features of every training image and view (only those the cache lacks),
        holds out 10% of the images for validation, trains the head with AdamW, a learning-rate schedule
        and early stopping, keeps the best epoch, and writes the model directory, including one
        `model.onnx` graph (backbone + head, output P(dog)).
        """
    ),
    code(
        """
        config = TrainConfig(data=str(DATA_DIR), out=str(OUT_DIR), backbone=BACKBONE, epochs=EPOCHS, views=VIEWS)
        head = Head(spec.feature_dim, config.head)
        print(f"backbone {spec.name}: frozen, {spec.feature_dim} pooled features, precision "
              f"{config.precision or spec.default_precision}")
        print(f"head ({sum(p.numel() for p in head.parameters()):,} trainable parameters):")
        print(head)
        print(f"epochs {config.epochs} (early stopping after {config.early_stopping_patience} without progress), "
              f"batch {config.batch_size}, lr {config.lr}, weight decay {config.weight_decay}")
        """
    ),
    code(
        """
        result = train(config, settings=SETTINGS)
        """
    ),
    code(
        """
        best = result.history[result.best_epoch - 1]
        print(f"best epoch {result.best_epoch} of {len(result.history)} run: "
              f"val loss {best['val_loss']:.4f}, val accuracy {best['val_accuracy']:.4f}")
        table(["step", "seconds"], [[step, f"{seconds:.1f}"] for step, seconds in result.seconds.items()])
        curves = OUT_DIR / PLOTS_DIR / "training_curves.png"
        training_curves_plot(result.history, curves)
        display(PNG(filename=str(curves)))
        """
    ),
    md(
        """
        ## 4. Evaluate on the test split

        `catdog.ml.evaluate.evaluate_model` runs the saved `model.onnx` (exactly what is served) on every
        test image, computes every metric with "dog" as the positive class, and draws the plots.
        """
    ),
    code(
        """
        metrics = evaluate_model(
            OUT_DIR, DATA_DIR, settings=SETTINGS, plots_dir=OUT_DIR / PLOTS_DIR, history=result.history
        )
        write_json(OUT_DIR / METRICS_JSON, metrics)
        print(f"test accuracy: {metrics['accuracy']:.4f} on {metrics['n']} images")
        names = ["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"]
        table(["metric", "value"], [[k, "n/a" if metrics[k] is None else f"{metrics[k]:.4f}"] for k in names])
        """
    ),
    code(
        """
        report = metrics["classification_report"]
        rows = []
        for name, row in report.items():
            if isinstance(row, dict):
                rows.append([name, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1-score']:.4f}",
                             int(row["support"])])
            else:  # "accuracy" is a single number
                rows.append([name, "", "", f"{row:.4f}", metrics["n"]])
        table(["", "precision", "recall", "f1-score", "support"], rows)
        (tn, fp), (fn, tp) = metrics["confusion_matrix"]
        print(f"cats: {tn} right, {fp} called dog; dogs: {tp} right, {fn} called cat")
        """
    ),
    code(
        """
        for name in ("confusion_matrix.png", "roc_curve.png", "worst_mistakes.png"):
            display(PNG(filename=str(OUT_DIR / PLOTS_DIR / name)))
        """
    ),
    md(
        """
        ## 5. The saved model

        `train` wrote a self-describing directory: `model.onnx` (backbone + head), `pet_gate.onnx`
        (is it a cat or a dog at all?), the head's weights, the training history and a config with the
        normalization, the training settings and the data's fingerprint; the cells above added the
        metrics and the plots. Serving needs ONNX Runtime and this folder only.
        """
    ),
    code(
        """
        table(
            ["file", "size"],
            [
                [str(path.relative_to(OUT_DIR)), f"{path.stat().st_size / 1e6:.2f} MB"]
                for path in sorted(OUT_DIR.rglob("*"))
                if path.is_file()
            ],
        )
        """
    ),
    code(
        """
        model_config = json.loads((OUT_DIR / CONFIG_JSON).read_text())
        print(f"{OUT_DIR / CONFIG_JSON}, one line per top-level key:")
        for key, value in model_config.items():
            print(textwrap.fill(f"{key}: {json.dumps(value)}", width=110, subsequent_indent="    "))
        """
    ),
    md(
        """
        ## 6. Predict

        `catdog.ml.predictor.Predictor` loads the model directory with ONNX Runtime alone (no PyTorch) and
        returns, for each image, the class, its confidence, P(dog) and the pet gate's verdict.
        """
    ),
    code(
        """
        predictor = Predictor(OUT_DIR)
        test_samples = splits["test"].samples
        paths = [next(s.path for s in test_samples if s.label == label) for label in (0, 1)]
        paths += [next(s.path for s in reversed(test_samples) if s.label == label) for label in (0, 1)]
        not_a_pet = Path("../tests/fixtures/nonpet/coffee.jpg")
        if not_a_pet.is_file():
            paths.append(not_a_pet.resolve())
        predictions = predictor.predict(paths)
        fig, axes = plt.subplots(1, len(paths), figsize=(2.8 * len(paths), 3.2))
        for ax, path, prediction in zip(axes, paths, predictions, strict=True):
            ax.imshow(load_image(path, 160))
            verdict = "" if prediction.is_pet is None or prediction.is_pet else "\\n(not a cat or dog?)"
            ax.set_title(f"{path.name}\\n{prediction.predicted_class} {prediction.confidence:.1%}{verdict}", fontsize=9)
            ax.axis("off")
        plt.show()
        table(
            ["file", "predicted", "confidence", "P(dog)", "pet score", "is a pet"],
            [
                [Path(p.path).name, p.predicted_class, f"{p.confidence:.3f}", f"{p.probability:.3f}",
                 "n/a" if p.pet_score is None else f"{p.pet_score:.3f}", p.is_pet]
                for p in predictions
            ],
        )
        """
    ),
    md(
        """
        The same steps from the command line:

        ```
        catdog data DATA_DIR
        catdog train --data DATA_DIR --backbone vgg16 --out models/my_model --views 1
        catdog evaluate --model models/my_model --data DATA_DIR/test --save
        catdog predict --model models/my_model some_photo.jpg
        ```
        """
    ),
]


def build() -> NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    for number, cell in enumerate(CELLS):
        cell["id"] = f"cell-{number:02d}"
    notebook.cells = CELLS
    nbformat.validate(notebook)
    return notebook


def main() -> None:
    nbformat.write(build(), NOTEBOOK)
    print(f"wrote {NOTEBOOK}")


if __name__ == "__main__":
    main()
