"""What `archspec --help` and each command's `--help` say: every command's summary,
description and epilog and every option's help, in one place, so the words a user learns
the tool from can be reviewed as text. The parser (`archspec.cli.parser`) reads them;
`{placeholders}` are filled there with the library's own constants (opsets, thresholds)."""

from __future__ import annotations

import argparse

EPILOG = """\
Specs are YAML files or the names of bundled specs (see `archspec list`).
Override any value with --set, e.g. --set head.classes=10 --set input.shape=[32,32,3].
Exit codes: 0 success, 1 failure while running, 2 bad input (spec, options, files).

examples:
  archspec validate specs/*.yaml
  archspec inspect resnet50 --set input.shape=[160,160,3]
  archspec build resnet50 -o resnet50.keras
  archspec scale efficientnet --preset all
  archspec build efficientnet --preset b3
  archspec report resnet50 -o resnet50.html
  archspec diff resnet50 resnet101
  archspec codegen resnet18 -o resnet18.py
  archspec weights vgg16 vgg16_weights_tf_dim_ordering_tf_kernels.h5 --set head.classes=2
  archspec train resnet18 --recipe cifar100 --data cifar-100-python --out runs/r18
  archspec schema -o archspec.schema.json
"""

DESCRIPTION = "Compile convolutional network specs (YAML) into analyzed, exact Keras models."

#: command -> (the one line of `archspec --help`, the description of `archspec COMMAND --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": (
        "check specs: schema, names and static shapes (no TensorFlow)",
        "Validate specs: every key and value, and the static shape analysis (an input too small for the network is "
        "an error that names the layer). Prints one line per problem."),
    "inspect": (
        "per-block shapes, params and MACs (no TensorFlow)",
        "Show each block (after repeats) with its output shape, parameters and MACs, and the totals. Params count "
        "what Keras' count_params() counts (batch-norm statistics included); MACs are multiply-accumulates of conv "
        "and dense layers."),
    "build": (
        "compile to a Keras model and save it (.keras)",
        "Build the Keras model, check its parameter count against the analysis, and save it atomically as .keras "
        "(reopen with keras.models.load_model after `import archspec`)."),
    "export": (
        "export to ONNX, LiteRT (TFLite), SavedModel or .keras, verified against Keras",
        "Export a spec (built with random weights, or with --weights), a saved MODEL.keras or a run directory of "
        "`archspec train` (pass it as SPEC). The format follows the suffix of -o (or --format):\n\n"
        "  onnx         .onnx    variants: --fp16, --quantize int8 | int8-dynamic    checked with onnxruntime\n"
        "  tflite       .tflite  variants: --fp16, --quantize int8 [--int8-io] | int8-dynamic\n"
        "                                                         checked with the LiteRT interpreter\n"
        "  saved_model  (dir)    float32                          checked with tf.saved_model.load\n"
        "  keras        .keras   float32                          checked with keras.models.load_model\n\n"
        "The result is reloaded and run next to Keras on real images (--check-data, or a run directory's own "
        "data) or else random inputs; above 1e-4 max difference (float32), 1e-2 (--fp16), or below the minimum "
        "top-1 agreement on real images (--fp16 99%, --quantize 95%) the export fails with exit 1 and writes "
        "nothing. --quantize needs real images to be checked on; int8 is calibrated on images the check does not "
        "use. ONNX and LiteRT have a dynamic batch; every format keeps the Keras input/output names and carries "
        "the metadata (spec name, resolved-spec sha256, archspec version, preprocessing). Writes are atomic."),
    "scale": (
        "compound scaling: phi, presets, sweeps, the coefficient search (no TensorFlow)",
        "Scale a spec with a scaling section. --phi uses the paper's formula d = alpha^phi, w = beta^phi, "
        "r = gamma^phi with the spec's coefficients; --preset a row of its official table. Filters are rounded to "
        "scaling.divisor (never below 90%), repeats rounded up, the resolution to the nearest multiple of "
        "scaling.resolution_divisor (see docs/scaling.md). Prints d, w, r, resolution, params, MACs and the MACs "
        "relative to the base, predicted and counted; -o writes the resolved, self-contained spec."),
    "list": (
        "the bundled specs with params and MACs (no TensorFlow)",
        "List the bundled specs (usable by name anywhere a SPEC is expected)."),
    "schema": (
        "JSON Schema of the spec language, for editors",
        "Print the JSON Schema of the spec language."),
    "train": (
        "train a spec from a recipe into a run directory (resumable)",
        "Train SPEC with Keras fit as the recipe R says, on data read from disk (an image folder with one "
        "sub-folder per class, a CIFAR-10/100 python directory, or an .npz with x_train, y_train, x_test, y_test). "
        "Writes to RUN_DIR: spec.yaml and recipe.yaml (resolved), checkpoints/ (every epoch and on SIGINT/SIGTERM), "
        "best.keras, final.keras, history.csv, tensorboard/, metrics.json. An existing RUN_DIR is never overwritten "
        "without --force; --resume RUN_DIR continues it from its latest checkpoint. RUN_DIR is locked while a "
        "process trains in it: a second one is refused."),
    "search": (
        "compound-scaling coefficients chosen by accuracy: an Optuna study over alpha, beta, gamma",
        "Search alpha, beta, gamma at --phi (default 1) under alpha*beta^2*gamma^2 = 2 (within --tolerance), each "
        "trial training the scaled network with the recipe into OUT/trials/trial-NNNN and scored by its held-out "
        "top-1. Trials that break the constraint, or exceed --max-macs/--max-params, are pruned before any training "
        "(static counts); Optuna's median pruner stops trials whose epoch top-1 falls below the median. The study "
        "is in --storage (default OUT/study.db, SQLite): any number of processes, on any number of machines with "
        "a PostgreSQL URL, join it with the same command, each pulling its next trial; each stops when the study "
        "holds --trials finished (complete or pruned) trials. A killed worker loses only its running trial, marked "
        "failed and queued again. Writes OUT/trials.csv, OUT/best-scaling.yaml (the scaling: block to paste into "
        "the spec), OUT/pareto.png and OUT/report.html; `optuna-dashboard URL` shows the study live."),
    "evaluate": (
        "loss, top-1/top-5, per-class accuracy, confusion matrix of a trained model",
        "Evaluate a run directory (its best.keras) or a .keras file on the test set of the data (all of it when it "
        "has none)."),
    "predict": (
        "top-k classes of images with a trained model",
        "Predict the top-k classes of each image; class names come from the run's classes.json (the training "
        "data's folder or CIFAR names)."),
    "report": (
        "a self-contained HTML report: diagram, charts, block table, the spec (no TensorFlow)",
        "Write one HTML file that needs no network access: an SVG diagram of the network drawn from the graph IR "
        "(blocks as boxes that expand to their layers, branches and merges as edges labelled with their tensor "
        "shapes, repeated blocks collapsed, zoom and pan), bar charts of params and MACs per stage and block, the "
        "resolution and channels through the network, the compound-scaling presets when the spec has them, the "
        "sortable per-block table, the totals, and the spec's YAML with line numbers (each block links to its "
        "line). With --model, the parameters Keras counts in a built .keras file are shown beside the static ones "
        "(this imports TensorFlow)."),
    "diff": (
        "what changed between two specs: blocks, layers, params, MACs (no TensorFlow)",
        "Compare two specs (or a spec with itself under other overrides or scaling), statically. Layers are matched "
        "by name: added, removed, or changed (op, attributes, output shape, params, MACs, or rewired between layers "
        "both have). Blocks (the stem's, each stage's, the head's) are matched by name and are changed when any of "
        "their layers is, or their output shape, params or MACs differ; they are grouped by stage. Prints a "
        "one-line summary, the groups, the changed blocks, the totals with their deltas (B - A) and the changed "
        "layers. Exit 0 whether or not they differ (--exit-code: 1 when they do)."),
    "weights": (
        "which layers of a weights file load into a spec, before anything is built (no TensorFlow)",
        "Compare a weights file with the spec's weighted layers, statically: keras.applications' legacy .h5 (by "
        "layer name), Keras 3 .weights.h5 and .keras files (also those saved from keras.applications models that "
        "nest sub-models: by their leaf layers' names), or an .npz of layer_name/weight_name arrays. For each layer: "
        "loaded, adapted (a stem over other input channels, by timm's rule), re-initialised (the classifier when "
        "head.classes differs), skipped (--weights-skip), missing from the file, or of other shapes; and what the "
        "file holds that the spec lacks. The summary line comes first. Exit 0 when the file loads under the policy "
        "--weights uses everywhere (build, train, export), 2 otherwise."),
    "codegen": (
        "the network as a standalone Keras 3 Python file (no TensorFlow)",
        "Write the network as one readable Python file that needs only `keras` (any backend:\n"
        "TensorFlow, JAX, PyTorch):\n"
        "  - one function per block type of the spec (bottleneck, mbconv, ...; blocks of one type\n"
        "    with different structures get bottleneck_2, ...), each block one call of it;\n"
        "  - build_model(include_top=True, classes=..., input_shape=..., pooling=None);\n"
        "  - the custom layers it needs (LocalResponseNormalization, LayerScale, CustomScaleLayer) written inline;\n"
        "  - a header with the spec, its params, MACs, layers and the resolved spec's sha256.\n"
        "build_model() makes the model of `archspec build` with the same --set: the same layer names,\n"
        "configurations and weights in the same order (so weights load into either)."),
}

EPILOGS: dict[str, str] = {
    "schema": "For completion and checking in editors using the YAML language server (VS Code's YAML extension, "
              "Neovim, ...):\n  archspec schema -o archspec.schema.json\nthen put this first line in a spec:\n"
              "  # yaml-language-server: $schema=./archspec.schema.json",
    "train": "examples:\n  archspec train resnet18 --recipe cifar100 --data cifar-100-python --out runs/r18 "
             "--set head.classes=100 --set input.shape=[32,32,3]\n  archspec train vgg16 --recipe finetune "
             "--data cats_vs_dogs/ --out runs/ft --set head.classes=2 --weights vgg16.h5\n"
             "  archspec train --resume runs/r18\n  tensorboard --logdir runs/r18/tensorboard",
    "search": "examples:\n  archspec search my_net.yaml --recipe quick.yaml --data digits.npz --trials 20 --epochs 3 "
              "--out search/\n  archspec search my_net.yaml --recipe quick.yaml --data digits.npz --trials 100 --epochs 3 "
              "--out search/ \\\n      --storage postgresql://USER:PASSWORD@HOST/DB --study my-net   # on every machine\n"
              "  optuna-dashboard sqlite:///search/study.db",
    "diff": "Each side is a spec file or a bundled name. --set, --preset and --phi apply to both sides;\n"
            "--set-a/--set-b add overrides to one side (after --set); --preset-a/--preset-b and\n"
            "--phi-a/--phi-b scale one side (instead of --preset/--phi). Deltas are B - A. MACs are\n"
            "multiply-accumulates of conv and dense layers (what papers call FLOPs).\n"
            "Exit codes: 0 compared (different or not), 1 different with --exit-code, 2 bad input.\n\n"
            "examples:\n"
            "  archspec diff resnet50 resnet101\n"
            "  archspec diff efficientnet efficientnet --preset-b b3      # EfficientNet-B0 vs B3\n"
            "  archspec diff efficientnet efficientnet --preset-a b1 --preset-b b2\n"
            "  archspec diff resnet50 resnet50 --set-b head.classes=10\n"
            "  archspec diff resnet50 my_resnet.yaml --set input.shape=[160,160,3]\n"
            "  archspec diff resnet50 my_resnet.yaml --exit-code      # CI: exit 1 when they differ\n"
            "  archspec diff resnet50 resnet101 --json\n"
            "  archspec diff resnet50 resnet101 --html diff.html      # self-contained page\n",
    "codegen": "example:\n  archspec codegen resnet50 --set head.classes=10 -o resnet50_10.py\n"
               "  python -c 'import resnet50_10; resnet50_10.build_model().summary()'",
}

#: option help of every command ("*": the options several commands share)
OPTIONS: dict[str, dict[str, str]] = {
    "*": {
        "--debug": "show tracebacks and TensorFlow's native start-up log lines",
        "specs": "spec files or bundled names",
        "spec": "a spec file or the name of a bundled spec",
        "--set": "override a value, e.g. head.classes=10, stages[0].blocks[0].filters=32, "
                 "stages[conv5].blocks[0].repeats=2 (an item by its name), stages[+]=VALUE (append) or "
                 "vars.width=32 (value read as YAML; repeatable)",
        "--recipe": "a training recipe (bundled name, e.g. finetune, or a path): trainable and frozen parameters of "
                    "each of its phases",
        "--recipe-set": "override a value of the recipe, e.g. phases[1].learning_rate=1e-5 (repeatable)",
        "--force": "replace an existing output file",
        "--weights-skip": "leave the layers matching GLOB (fnmatch, e.g. 'fc*') at their initial weights: reported, "
                          "and allowed to differ from the file (repeatable)",
    },
    "validate": {"--quiet": "print nothing for valid specs"},
    "inspect": {
        "--json": "one JSON object (name, shapes, params, macs, layers, blocks)",
        "--layers": "with --json: include every layer's attributes",
        "--markdown": "a Markdown report (for docs and reviews)",
    },
    "build": {
        "--output": "output .keras file (default: NAME.keras)",
        "--precision": "layer dtype policy; the classifier (and its softmax) stays float32",
        "--seed": "seed for reproducible initial weights",
        "--weights": "load weights, strictly (see `archspec weights`): a keras.applications .h5, a Keras 3 "
                     ".weights.h5 or .keras, or an .npz; `imagenet`: the keras.applications file the spec records "
                     "(from Keras' cache, ~/.keras/models, downloaded once); or a URL with --weights-sha256",
        "--weights-sha256": "the sha256 of the --weights file or URL (required with a URL: nothing is loaded "
                            "unchecked)",
        "--json": "report as JSON (adds build_seconds and output)",
        "--phi": "compound-scale first (as `archspec scale --phi`)",
        "--preset": "scale by a row of the spec's official table first, e.g. b3",
    },
    "export": {
        "--output": "output file (a directory for saved_model)",
        "--format": "default: from the suffix of PATH (.onnx, .tflite, .keras); another suffix needs --format",
        "--opset": "ONNX opset ({min_opset}-{max_opset}, default {default_opset})",
        "--via": "how ONNX is made: ir (default: emitted from the graph IR, no TensorFlow needed) or tf2onnx (traced "
                 "by TensorFlow and converted by tf2onnx, the cross-check)",
        "--external-data": "ONNX weights in PATH.data beside PATH (automatic above 2 GB, protobuf's limit)",
        "--no-check": "skip the comparison with Keras (nothing is verified)",
        "--check-data": "real images to check on (up to 256 of the test split, through the model's input): an .npz "
                        "with x_train, y_train[, x_test, y_test], a CIFAR directory, a folder of class folders or of "
                        "images; reports top-1 agreement (and accuracy, with labels). Default: a run directory's "
                        "data, else random inputs",
        "--min-agreement": "--fp16/--quantize: the top-1 agreement with float32 needed on real images (default "
                           "{fp16_agreement} for fp16, {int8_agreement} for int8)",
        "--force": "replace an existing PATH",
        "--fp16": "float16 weights. ONNX: float16 compute too (inputs/outputs stay float32; batch norms folded into "
                  "their convolutions, nodes that overflow float16 kept float32); LiteRT: weights dequantized at load",
        "--int8-io": "tflite --quantize int8: int8 input and output tensors too (scale and zero point in the file); "
                     "default float32 in and out",
        "--quantize": "int8 quantization. LiteRT int8: full-integer kernels calibrated on real images; "
                      "int8-dynamic: int8 weights. ONNX Runtime int8: static QDQ, uint8 activations calibrated on real "
                      "images, int8 weights per output channel in 7 bits (-64..64: no product pair overflows "
                      "int16 in the u8*s8 kernels of x86 CPUs without VNNI, so the file agrees on any CPU); "
                      "int8-dynamic: uint8 weights, activations quantized at run time. Needs --check-data (or a run "
                      "directory, or static's --calibration) unless --no-check",
        "--calibration": "--quantize int8: a .npy (N,H,W,C) or a directory of images (default: training images of "
                         "the check data, else generated)",
        "--samples": "random inputs for the check without check data (default 3; variants at least 16)",
        "--seed": "seed of the random weights and inputs",
        "--json": "the export report as JSON",
        "--weights": "a spec's weights, loaded strictly as `build --weights` does (see `archspec weights`): a "
                     "file, `imagenet` (the spec's published keras.applications file) or a URL with --weights-sha256",
        "--weights-sha256": "the sha256 of the --weights file or URL (required with a URL)",
        "--phi": "compound-scale the spec by phi first, as build does (the paper's formula)",
        "--preset": "compound-scale the spec by a row of its official table first, e.g. b3, as build does",
        "--bake-preprocessing": "put the spec's input.preprocess (keras.applications' caffe / torch / tf "
                                "preprocess_input) in front of the exported model as fixed layers, so it takes RGB "
                                "images 0..255; recorded in the metadata's archspec.preprocessing (none bakes nothing)",
    },
    "scale": {
        "--phi": "a number (may be fractional or negative), a sweep START:STOP[:STEP] (e.g. 0:7), or a comma list",
        "--preset": "a preset of the spec's table (e.g. b3), or 'all'",
        "--search": "the paper's grid search: alpha, beta, gamma >= 1 with alpha*beta^2*gamma^2 ~ 2, at phi=1",
        "--step": "--search grid step (default 0.05)",
        "--tolerance": "--search: relative distance from 2 allowed (default 0.05)",
        "--output": "write the scaled spec (YAML; one --phi or --preset)",
        "--plot": "plot params, MACs and resolution against phi, the official presets beside the formula's points: "
                  "FILE.svg (the plot) or FILE.html (a self-contained page with the plot and the table)",
        "--json": "report as JSON (d, w, r as numbers, params, macs, ratios)",
    },
    "list": {},
    "schema": {
        "--output": "write to a file instead of stdout",
        "--recipe": "the schema of training recipes instead of specs",
    },
    "train": {
        "spec": "a spec file or bundled name (with --resume: optional, and refused unless it is the run's own spec)",
        "--recipe": "a recipe file or bundled name (cifar100, finetune)",
        "--data": "the training data (with --resume: default the run's)",
        "--out": "the run directory to create",
        "--resume": "continue a run from its latest checkpoint",
        "--force": "start over in an existing RUN_DIR (its contents are deleted): only a run directory (with "
                   "run.json) or an empty one, never one holding the data or the current directory",
        "--set": "override a value of the spec",
        "--recipe-set": "override a value of the recipe, e.g. optimizer.learning_rate=0.01",
        "--epochs": "the recipe's epochs (a recipe without phases)",
        "--batch-size": "the recipe's data.batch_size (per replica)",
        "--weights": "initial weights (a keras.applications .h5, a Keras 3 .weights.h5 or .keras, an .npz; "
                     "`imagenet`: the spec's published keras.applications file; a URL with --weights-sha256), loaded "
                     "strictly (see `archspec weights`): a classifier of another width is re-initialised",
        "--weights-sha256": "the sha256 of the --weights file or URL (required with a URL)",
        "--distribute": "mirrored: tf.distribute.MirroredStrategy over the local GPUs; multi_worker: one process "
                        "per machine (--workers, --rank) on keras.distribution with JAX; the global batch is "
                        "batch_size x replicas and the learning rate is scaled by the replicas",
        "--workers": "with --distribute multi_worker: every process's HOST:PORT, comma-separated, the same list on "
                     "every machine; the first is the coordinator",
        "--rank": "with --distribute multi_worker: this process's place in --workers (0 is the coordinator and "
                  "writes the run directory)",
        "--allow-collapse": "accept a run whose network collapsed (its last 3 or more epochs at chance after "
                            "better ones): a warning instead of exit 1 (the recipe's callbacks.allow_collapse)",
        "--json": "print metrics.json (and no progress bar)",
    },
    "search": {
        "--recipe": "a recipe file or bundled name (its metrics must include top1; no data.image_size)",
        "--data": "the training data; held out: its test split, else the recipe's data.validation_split",
        "--out": "the search directory: search.json (its marker), trials/, the default storage study.db, the results "
               "(joined, never replaced)",
        "--trials": "the study's total of finished (complete or pruned) trials; a worker stops when it holds them",
        "--storage": "the study's database URL (default sqlite:///OUT/study.db); postgresql://USER:PASSWORD@HOST/DB "
                     "lets processes on many machines join one study (pip install 'archspec[postgresql]')",
        "--study": "the study's name in the storage (default: SPEC's name with -search)",
        "--phi": "the compound coefficient the networks are scaled at (default 1, as the paper's search)",
        "--sampler": "tpe (Optuna's TPE; default) or grid (the paper's: step {search_step:g} under the constraint, in the ranges)",
        "--alpha": "alpha's range LOW:HIGH (default {alpha_range})",
        "--beta": "beta's range LOW:HIGH (default {beta_range})",
        "--gamma": "gamma's range LOW:HIGH (default {gamma_range})",
        "--tolerance": "relative distance of alpha*beta^2*gamma^2 from 2 beyond which a trial is pruned (default {search_tolerance:g})",
        "--max-macs": "prune trials whose network has more MACs (400M, 2.5G, ...), before training",
        "--max-params": "prune trials whose network has more parameters, before training",
        "--epochs": "each trial's epochs (the recipe's epochs; a short budget)",
        "--batch-size": "the recipe's data.batch_size",
        "--recipe-set": "override a value of the recipe",
        "--heartbeat": "seconds between a worker's heartbeats; a killed worker's trial is failed and queued again "
                       "after twice that (default {heartbeat})",
        "--write-spec": "also write SPEC with the best coefficients in its scaling: block (FILE.yaml)",
        "--force": "replace an existing --write-spec file",
        "--json": "the result as JSON: every trial, the best, the Pareto front, the scaling block",
    },
    "evaluate": {
        "--batch-size": "images per batch (default 64)",
        "--confusion": "write the confusion matrix (rows: true, columns: predicted) as CSV; every class name is "
                       "quoted, and one a spreadsheet would read as a formula (starting with = + - @, a tab or CR) "
                       "starts with a single quote",
        "--force": "replace an existing --confusion file",
        "--json": "loss, top1, top5, per_class, confusion as JSON",
    },
    "predict": {
        "--top": "the K most likely classes of each image (default 5; K >= 1; a K above the model's classes gives "
                 "all of them, with a note)",
    },
    "report": {
        "--output": "output .html file (default: NAME.html), or .svg for the diagram alone with every block expanded",
        "--model": "a model built from the spec (archspec build), or a weights file (.h5, .weights.h5, .npz) "
                   "loaded into it by the strict loader: measured Keras counts beside the static ones",
    },
    "diff": {
        "a": "side A: a spec file or the name of a bundled spec",
        "b": "side B: a spec file or the name of a bundled spec",
        "--set": "override a value on both sides, e.g. head.classes=10 (value read as YAML; repeatable)",
        "--set-a": "override a value on side A only (after --set; repeatable)",
        "--set-b": "override a value on side B only (after --set; repeatable)",
        "--preset": "scale both sides by a row of their official table, e.g. b3",
        "--phi": "compound-scale both sides by the paper's formula",
        "--preset-a": "scale side A by a preset, e.g. b3",
        "--preset-b": "scale side B by a preset, e.g. b3",
        "--phi-a": "compound-scale side A",
        "--phi-b": "compound-scale side B",
        "--json": "one JSON object: a, b, differ, summary, totals, counts, groups, blocks, layers",
        "--html": "write a self-contained HTML page (no external resources)",
        "--force": "with --html: replace an existing file",
        "--exit-code": "exit 1 when the two differ (for CI), else 0",
    },
    "codegen": {"--output": "write the file (atomically) instead of printing it"},
    "weights": {
        "file": "the weights file (.h5, .weights.h5, .keras, .npz)",
        "--json": "the report as JSON: summary, loadable, counts, every layer with both shapes, the file's extra layers",
    },
}


def option_help(command: str, name: str, **values) -> str | None:
    """The help of option (or positional) `name` of `command`: its own, else the shared one;
    None for an option documented nowhere (argparse then prints none)."""
    text = OPTIONS.get(command, {}).get(name, OPTIONS["*"].get(name))
    return text.format(**values) if text is not None and values else text


class CommandParser(argparse.ArgumentParser):
    """A command's parser: an unknown option is that command's usage error (its usage line,
    not the top level's), with the closest of its options, e.g. ``archspec export: error:
    unrecognized arguments: --forse (did you mean '--force'?)``."""

    def parse_known_args(self, args=None, namespace=None):
        ns, extra = super().parse_known_args(args, namespace)
        if extra:
            from ..language.messages import suggest

            options = [o for a in self._actions for o in a.option_strings]
            self.error(f"unrecognized arguments: {' '.join(extra)}{suggest(extra[0].split('=')[0], options)}")
        return ns, extra
