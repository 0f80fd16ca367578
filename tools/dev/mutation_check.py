"""Plant defects one at a time in a copy of the repository and check that the tests of each one fail.

    python tools/dev/mutation_check.py                 # every mutant; exit 1 if one is missed, 2 on a stale mutant
    python tools/dev/mutation_check.py --list          # names, files and tests of the mutants
    python tools/dev/mutation_check.py --only score-ignores-meanmax --baseline

Each mutant is a small patch anchored to a definition (file, the function, class or module-level name that holds
the text, text found exactly once in that definition's source, replacement) and the tests that must catch it
(pytest arguments). The copy lives in a temporary folder (the files git tracks or would track, plus a link to the
reference data), never in the working tree; each mutant runs only its own tests, with -x (the first failure is
enough). A mutant whose anchor is gone, or whose text is no longer found exactly once in it, is reported as stale:
after moving code, update the anchor's file. ``--baseline`` first runs every selected test on the unmutated copy
(a failure there would make every "caught" meaningless).
"""
import ast
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from dpn_mxnet import cli

REPO = pathlib.Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutant:
    name: str
    promise: str    # what the README promises, which the defect breaks
    path: str       # file, relative to the repository root
    anchor: str     # function or class (Class.method, outer.inner) or module-level name defined in that file
    old: str        # text found exactly once in the anchor's source
    new: str
    tests: tuple    # pytest arguments that select the tests expected to fail


def raw(test_file, expression=None):
    """pytest arguments selecting the tests of ``test_file`` that match the -k ``expression``."""
    return ("tests/" + test_file,) + (("-k", expression) if expression else ())


MUTANTS = (
    Mutant("score-ignores-meanmax", "--meanmax pools the class-score map by 0.5 x (mean + max)", "test/score.py",
           "build", "size, args.meanmax,", "size, False,", raw("test_score.py", "raw_outputs and mean-max")),
    Mutant("score-ignores-ten-crop", "--ten-crop averages ten views", "test/score.py", "build",
           "if args.ten_crop:", "if False:", raw("test_score.py", "raw_outputs and ten")),
    Mutant("score-ignores-size", "--size S scores at S", "test/score.py", "parse_args",
           "    args = parser.parse_args(argv)\n", "    args = parser.parse_args(argv)\n    args.size = 224\n",
           raw("test_score.py", "raw_outputs and 320")),
    Mutant("score-ignores-resize", "--resize sets the short side before ten-crop", "test/score.py", "build",
           "args.resize or size * 256 // 224", "size * 256 // 224", raw("test_score.py", "ten")),
    Mutant("ten-crop-drops-a-view", "ten-crop: centre, 4 corners and their mirrors", "dpn_mxnet/data/validation.py",
           "TenCropIter._crops", '        crops = ten_crop(image, (self._size, self._size)).astype("float32")\n',
           '        crops = ten_crop(image, (self._size, self._size)).astype("float32")\n        crops[9] = crops[0]\n',
           raw("test_data_iter.py", "ten_crop")),
    Mutant("val-crop-fraction", "validation crop fraction 1.0 (short side to S, S x S crop)",
           "dpn_mxnet/data/validation.py", "val_iter", "resize = image_size if resize is None",
           "resize = image_size * 8 // 7 if resize is None", raw("test_data_iter.py", "centred_crop")),
    Mutant("mean-changed", "(pixel - (124, 117, 104)) x 0.0167", "dpn_mxnet/data/pixels.py", "MEAN_RGB",
           "(124, 117, 104)", "(124, 116, 104)", raw("test_data_iter.py", "normalisation")),
    Mutant("scale-changed", "(pixel - (124, 117, 104)) x 0.0167", "dpn_mxnet/data/pixels.py", "SCALE",
           "0.0167", "0.017", raw("test_data_iter.py", "normalisation")),
    Mutant("bilinear-not-bicubic", "bicubic resampling", "dpn_mxnet/data/pixels.py", "BICUBIC",
           "= 2", "= 1", raw("test_data_iter.py", "centred_crop")),
    Mutant("meanmax-drops-max-head", "mean-max: 0.5 x (average + max) of the class-score map", "symbols/meanmax.py",
           "score_logits", "(out + peak) * 0.5", "(out + out) * 0.5", raw("test_score_graph.py", "meanmax_matches")),
    Mutant("export-ignores-meanmax", "export_onnx --size 320 --meanmax exports the mean-max test graph",
           "tools/export_onnx.py", "export", "size, meanmax, spec.train_size)", "size, False, spec.train_size)",
           raw("test_export_and_refine.py", "onnx")),
    Mutant("export-training-graph", "export_onnx at another size exports the fully-convolutional test graph",
           "tools/export_onnx.py", "export", "if size == spec.train_size and not meanmax:", "if True:",
           raw("test_export_and_refine.py", "onnx")),
    Mutant("inference-arrangement-input", "the CPU variant arranged for inference computes the authors' function",
           "symbols/dpn.py", "_bottleneck", 'a = conv(a, name + "_c1x1-a__conv", r)',
           'a = conv(a._replace(sym=a.sym * 1.01) if arrangement.fold_for_inference else a, '
           'name + "_c1x1-a__conv", r)',
           raw("test_fast_variant.py", "inference_outputs or inference_arrangement")),
    Mutant("merged-groups-shifted", "the CPU variant trains the authors' function, every named DPN",
           "symbols/cpu_fast.py", "grouped_conv", 'name=name + "__group") % m', 'name=name + "__group") * 0 % m',
           raw("test_fast_variant.py", "every_named")),
    Mutant("top-k-one-short", "top-k counts a label among the k best classes", "dpn_mxnet/evaluation.py",
           "topk_hits", "[:, :k]", "[:, :k - 1]", raw("test_own_images.py", "top_k_counts")),
    Mutant("padding-rows-counted", "every validation image is scored exactly once", "dpn_mxnet/evaluation.py",
           "evaluate", "keep = batch.data[0].shape[0] - batch.pad", "keep = batch.data[0].shape[0]",
           raw("test_score.py", "raw_outputs and 224")),
    Mutant("refine-uncentred-variance", "BN refinement averages each batch's mean and variance", "tools/refine_bn.py",
           "refine", "value.var(axis=(0, 2, 3))", "(value ** 2).mean(axis=(0, 2, 3))",
           raw("test_export_and_refine.py", "averages")),
    Mutant("resume-from-fresh-weights", "--resume continues from the checkpoint's weights", "train/train_imagenet.py",
           "initial_params", "return saved.arg_params, saved.aux_params", "return None, None",
           raw("test_train.py", "resume_continues")),
    Mutant("resume-without-momentum", "--resume continues with the optimizer state", "train/train_imagenet.py",
           "bound_module", "if os.path.isfile(states):", "if False:", raw("test_train.py", "resume_continues")),
    Mutant("momentum-flag-ignored", "--mom sets SGD's momentum", "train/train_imagenet.py",
           "optimizer_settings", '"momentum": args.mom,', '"momentum": 0.9,',
           raw("test_train.py", "resume_continues")),
    Mutant("lr-scaling", "lr 0.316 per 1280 images, scaled linearly", "train/train_imagenet.py", "REFERENCE_BATCH",
           "0.316, 1280", "0.316, 1024", raw("test_train.py", "default_recipe")),
    Mutant("weight-decay-default", "weight decay 1e-4", "train/train_imagenet.py", "build_parser",
           'default=1e-4, help="weight decay"', 'default=5e-4, help="weight decay"',
           raw("test_train.py", "default_recipe")),
    Mutant("lr-steps-default", "x0.1 at epochs 30, 60, 90", "train/train_imagenet.py", "build_parser",
           'default="30,60,90"', 'default="30,60,80"', raw("test_train.py", "default_recipe")),
    Mutant("model-info-not-atomic", "checkpoint files are renamed into place once complete", "dpn_mxnet/checkpoint.py",
           "save_model_info", "atomic_write(model_path(prefix), lambda tmp: _write_json(tmp, info))",
           "_write_json(model_path(prefix), info)", raw("test_train.py", "interrupted")),
    Mutant("symbol-not-atomic", "checkpoint files are renamed into place once complete", "dpn_mxnet/checkpoint.py",
           "save", "atomic_write(symbol_path(prefix), symbol.save)", "symbol.save(symbol_path(prefix))",
           raw("test_train.py", "interrupted")),
    Mutant("predict-ignores-resize", "predict --resize sets the short side before the centre crop",
           "tools/predict.py", "predict", "load_image(path, size, args.resize)", "load_image(path, size)",
           raw("test_predict.py", "any_size")),
    Mutant("predict-squashes", "predict: short side resized, then the centre crop", "dpn_mxnet/data/images.py",
           "load_image", "mx.image.resize_short(image, resize or image_size, interp=BICUBIC)",
           "mx.image.imresize(image, resize or image_size, resize or image_size, interp=BICUBIC)",
           raw("test_predict.py", "any_size")),
    Mutant("hsl-planes-swapped", "HSL jitter (20, 40, 50) on hue, saturation, lightness", "dpn_mxnet/data/kernel.py",
           "hsl_jitter", "np.clip(values + d_l, 0, 255), np.clip(values + d_s, 0, 255)",
           "np.clip(values + d_s, 0, 255), np.clip(values + d_l, 0, 255)", raw("test_data_augment.py", "hsl")),
    Mutant("benchmark-fastest-step", "img/s over the median step", "dpn_mxnet/benchmarking.py", "report",
           "images_per_step / statistics.median(times)", "images_per_step / min(times)",
           raw("test_benchmark.py", "json_line")),
    Mutant("benchmark-binds-other-graph", "the benchmark binds the graph its entry point binds",
           "tools/dev/benchmark.py", "build_symbol",
           "symbols.logits(args.network, image_size=args.size, arrangement=arrangement)",
           "symbols.logits(args.network, image_size=args.size, arrangement=symbols.AUTHORS)",
           raw("test_benchmark.py", "json_line")),
    Mutant("batch-memory-ignores-holders", "batches handed to training are never written while held",
           "dpn_mxnet/data/pipeline.py", "BatchMemory.take", "if sys.getrefcount(array) == 3:",
           "if sys.getrefcount(array) >= 3:", raw("test_fork_pipeline.py", "intact or batch_memory")),
    Mutant("fork-draws-unbuffered-uint32", "aug fork draws what numpy's generator draws", "dpn_mxnet/data/draws.py",
           "_next32", "if pcg[4]:", "if False:", raw("test_fork_pipeline.py", "compiled_draws or reference")),
    Mutant("fork-mirror-dropped", "aug fork mirrors half of the crops", "dpn_mxnet/data/kernel.py", "augment_into",
           "if mirror:  # the jitter", "if False:  # the jitter", raw("test_fork_kernel.py", "every_colour")),
)


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--baseline", action="store_true",
                        help="first run the selected tests on the unmutated copy; they must pass")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed to each mutant's tests")
    args = parser.parse_args(argv)
    names = {m.name for m in MUTANTS}
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        parser.error("--only: unknown mutant %s; --list names them" % ", ".join(unknown))
    return args


def tracked_files():
    """Files git tracks or would track (not ignored), relative to the repository root."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         check=True, capture_output=True).stdout
    return [name for name in out.decode().split("\0") if name and (REPO / name).is_file()]


def make_copy(workspace):
    """A copy of the repository under ``workspace``/repo; the reference data reachable as the tests look for it."""
    copy = workspace / "repo"
    for name in tracked_files():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    return copy


def reference_folder():
    """Where the tests find the reference data for this checkout ($DPN_REFERENCE or beside the checkout)."""
    return pathlib.Path(os.environ.get("DPN_REFERENCE") or REPO.parent / "shared" / "reference")


def definitions(tree, prefix=""):
    """(qualified name, node) of the functions and classes defined in ``tree`` (nested as ``Class.method`` or
    ``outer.inner``) and of the names its module and class bodies assign."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield prefix + node.name, node
            yield from definitions(node, prefix + node.name + ".")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and not isinstance(tree, (ast.FunctionDef,
                                                                                      ast.AsyncFunctionDef)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        yield prefix + name.id, node


def anchor_span(text, anchor):
    """(start, end): the characters of ``text`` (Python source) that define ``anchor``, whole lines from its first
    decorator to its last line; None where nothing of that name is defined."""
    for name, node in definitions(ast.parse(text)):
        if name == anchor:
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            lines = text.splitlines(keepends=True)
            return sum(map(len, lines[:first - 1])), sum(map(len, lines[:node.end_lineno]))
    return None


def stale(mutant, root=REPO):
    """Why ``mutant`` no longer applies to the checkout at ``root``, or None."""
    path = root / mutant.path
    if not path.is_file():
        return "%s: no such file" % mutant.path
    text = path.read_text()
    span = anchor_span(text, mutant.anchor)
    if span is None:
        return "%s: defines no function, class or name %r (moved? update the mutant's file)" % (mutant.path,
                                                                                                mutant.anchor)
    count = text[span[0]:span[1]].count(mutant.old)
    if count != 1:
        return "%s, %s: the text to replace is found %d times, expected once: %r" % (mutant.path, mutant.anchor,
                                                                                     count, mutant.old)
    return None


def planted(mutant, text):
    """``text`` (the mutant's file) with its defect planted inside its anchor."""
    start, end = anchor_span(text, mutant.anchor)
    return text[:start] + text[start:end].replace(mutant.old, mutant.new, 1) + text[end:]


def run_tests(copy, tests, timeout):
    """(pytest's exit code, seconds, last line of its output) of ``tests`` run in ``copy``."""
    env = dict(os.environ, PYTHONPATH=str(copy), DPN_REFERENCE=str(reference_folder()),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - start, "timed out after %d s" % timeout
    lines = (done.stdout + done.stderr).strip().splitlines() or [""]
    return done.returncode, time.monotonic() - start, lines[-1]


def check(mutant, copy, timeout):
    """Plant ``mutant`` in ``copy``, run its tests, restore the file; returns (verdict, seconds, detail)."""
    target = copy / mutant.path
    original = target.read_text()
    target.write_text(planted(mutant, original))
    try:
        code, seconds, last = run_tests(copy, mutant.tests, timeout)
    finally:
        target.write_text(original)
    if code == 1:  # pytest: tests ran and some failed
        return "caught", seconds, last
    if code == 0:
        return "MISSED", seconds, last
    return "ERROR", seconds, "pytest exit code %s: %s" % (code, last)


def main(argv=None):
    args = parse_args(argv)
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for m in mutants:
            print("%-28s %-44s %-60s %s" % (m.name, "%s::%s" % (m.path, m.anchor), m.promise, " ".join(m.tests)))
        return 0
    if not (reference_folder() / "official").is_dir():
        print("reference data not found at %s (set DPN_REFERENCE): the tests that need it would skip, and a "
              "skipped test catches nothing" % reference_folder())
        return 2
    problems = [(m.name, stale(m)) for m in mutants if stale(m)]
    for name, why in problems:
        print("STALE   %-28s %s" % (name, why))
    if problems:
        print("%d stale mutant(s): update their text in tools/dev/mutation_check.py" % len(problems))
        return 2
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutation-check-") as workspace:
        copy = make_copy(pathlib.Path(workspace))
        if args.baseline:
            tests = sorted({m.tests for m in mutants})
            for selection in tests:
                code, seconds, last = run_tests(copy, selection, args.timeout)
                print("baseline %-60s %6.1f s  %s" % (" ".join(selection), seconds, last), flush=True)
                if code != 0:
                    print("the unmutated copy fails these tests: fix them first")
                    return 2
        verdicts = []
        for m in mutants:
            verdict, seconds, detail = check(m, copy, args.timeout)
            verdicts.append(verdict)
            print("%-7s %-28s %6.1f s  %s" % (verdict, m.name, seconds, detail), flush=True)
    caught = verdicts.count("caught")
    print("%d of %d mutants caught in %.0f s" % (caught, len(mutants), time.monotonic() - start))
    return 0 if caught == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())
