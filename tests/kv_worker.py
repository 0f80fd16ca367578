"""A small dist_sync kvstore worker for the launcher tests (run through tools/launch.py, never by pytest itself).

Each worker announces its rank, registers SGD on the servers, then for every step pushes gradients that are a known
function of (rank, step, key), pulls the updated weights and prints ``step N done`` (the fault test waits for it).
At the end it writes ``rank-<rank>.json`` into --out: the pulled weights, its view of the job (rank, workers,
addresses from the environment), where it ran and its --echo argument. ``expected_weights`` is the same update in
plain numpy, for the tests to compare against. It imports nothing from tests/, so that a test can copy it and sync it
to a "remote" host.
"""
import argparse
import json
import os
import time

import numpy as np

SHAPES = {3: (4, 5), 11: (257,)}
LEARNING_RATE = 0.25
ENVIRONMENT = ("DMLC_NODE_HOST", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "SSH_CONNECTION")


def initial_weight(key):
    return np.random.RandomState(key).uniform(-1, 1, SHAPES[key]).astype(np.float32)


def gradient(rank, step, key):
    return np.random.RandomState(10000 * step + 100 * rank + key).normal(0, 1, SHAPES[key]).astype(np.float32)


def expected_weights(num_workers, steps):
    """The weights after ``steps`` synchronous SGD steps on the summed gradients of ``num_workers`` workers."""
    weights = {}
    for key in SHAPES:
        weight = initial_weight(key)
        for step in range(steps):
            total = sum(gradient(rank, step, key) for rank in range(num_workers))
            weight = weight - np.float32(LEARNING_RATE) * total
        weights[key] = weight
    return weights


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the result file")
    parser.add_argument("--steps", type=int, default=3, help="push/pull steps")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds to sleep after each step")
    parser.add_argument("--tag", default="", help="ignored; lets a test find this job's processes")
    parser.add_argument("--echo", default="", help="written back into the result, to check that it arrived intact")
    args = parser.parse_args()

    import mxnet as mx

    from dpn_mxnet.launcher.supervisor import announce_rank

    kv = mx.kv.create("dist_sync")
    announce_rank(kv)
    kv.set_optimizer(mx.optimizer.SGD(learning_rate=LEARNING_RATE, momentum=0.0, wd=0.0))
    for key in SHAPES:
        kv.init(key, mx.nd.array(initial_weight(key)))
    pulled = {key: mx.nd.zeros(shape) for key, shape in SHAPES.items()}
    for step in range(args.steps):
        for key in SHAPES:
            kv.push(key, mx.nd.array(gradient(kv.rank, step, key)))
            kv.pull(key, out=pulled[key])
        mx.nd.waitall()
        print("step %d done" % step, flush=True)
        time.sleep(args.pause)
    result = {"rank": kv.rank, "num_workers": kv.num_workers, "cwd": os.getcwd(), "echo": args.echo,
              "env": {name: os.environ.get(name) for name in ENVIRONMENT},
              "weights": {str(key): value.asnumpy().tolist() for key, value in pulled.items()}}
    with open(os.path.join(args.out, "rank-%d.json" % kv.rank), "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
