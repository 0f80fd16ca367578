"""timm's own answers for the weight conversion's tests; runs in the separate environment .venv-timm (torch and
timm, built by ``make timm-venv``), not in the project's .venv:

    .venv-timm/bin/python -m tools.dev.timm_reference manifest -o tests/data/timm_dpn_manifest.json
    .venv-timm/bin/python -m tools.dev.timm_reference logits jobs.json

manifest: key, shape and dtype of the state dict of every DPN variant, built with pretrained=False.
logits: for each job {"model", "weights", "images", "out", "num_classes", "test_time_pool"} of a JSON list, load ``weights``
(a state dict file) into timm's ``model`` the way timm loads checkpoints (strictly), run it in eval mode on the
float32 batch of the .npy file ``images`` and save the logits to ``out``; with test_time_pool, timm's
test-time-pool head (the counterpart of the mean-max test graph) wraps the model first.
"""
import argparse
import json
import sys

import numpy as np
import timm
import torch
from timm.layers import apply_test_time_pool
from timm.models import load_checkpoint

import symbols
from dpn_mxnet import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    commands = parser.add_subparsers(dest="command", required=True)
    manifest = commands.add_parser("manifest", help="state-dict keys and shapes per variant")
    manifest.add_argument("-o", "--out", required=True, help="JSON file to write")
    logits = commands.add_parser("logits", help="timm's logits for converted weights")
    logits.add_argument("jobs", help="JSON list of jobs (see above)")
    return parser.parse_args(argv)


def manifest():
    """JSON text {"timm": version, "torch": version, "models": {variant: {key: [shape, dtype]}}}, one key a
    line."""
    models = []
    for name in symbols.VARIANTS:  # timm's names are ours
        state = timm.create_model(name, pretrained=False).state_dict()
        rows = ("  %s: %s" % (json.dumps(k), json.dumps([list(v.shape), str(v.dtype).replace("torch.", "")]))
                for k, v in state.items())
        models.append(" %s: {\n%s\n }" % (json.dumps(name), ",\n".join(rows)))
    return '{"timm": %s, "torch": %s, "models": {\n%s\n}}\n' % (
        json.dumps(timm.__version__), json.dumps(torch.__version__), ",\n".join(models))


def run_job(job):
    images = torch.from_numpy(np.load(job["images"]))
    weights = job["weights"]
    model = timm.create_model(job["model"], pretrained=False, num_classes=int(job.get("num_classes", 1000)))
    load_checkpoint(model, weights, strict=True)
    model.eval()
    if job.get("test_time_pool"):
        model, pooled = apply_test_time_pool(model, {"input_size": tuple(images.shape[1:])})
        if not pooled:
            sys.exit("error: timm applies its test-time pool only above the training size, not at %s"
                     % (tuple(images.shape[1:]),))
    with torch.inference_mode():
        np.save(job["out"], model(images).numpy())


def main(argv=None):
    args = parse_args(argv)
    if args.command == "manifest":
        with open(args.out, "w") as f:
            f.write(manifest())
        return
    with open(args.jobs) as f:
        for job in json.load(f):
            run_job(job)


if __name__ == "__main__":
    main()
