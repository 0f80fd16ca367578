"""The timm side of the side-by-side benchmark: the same measurements as tools/dev/benchmark.py, on timm's DPN in
PyTorch (CPU), printed as the same JSON line. Runs in the separate environment .venv-timm
(``make bench-timm`` builds it): ``.venv-timm/bin/python -m tools.dev.bench_timm --network dpn68 --mode train``.

train: forward, cross-entropy, backward and SGD step (momentum 0.9, wd 1e-4); infer: eval mode under
torch.inference_mode; score: timm's test-time pooling head (its counterpart of the mean-max scoring graph).
"""
import sys

import timm
import torch
from timm.layers import apply_test_time_pool

from dpn_mxnet import benchmarking, cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    benchmarking.add_arguments(parser)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads; default: OMP_NUM_THREADS as PyTorch reads it")
    args = benchmarking.check_arguments(parser, parser.parse_args(argv))
    if args.network not in timm.list_models("dpn*"):
        parser.error("--network: timm has no %r (it has %s)" % (args.network, ", ".join(timm.list_models("dpn*"))))
    return args


def build_model(args):
    model = timm.create_model(args.network, pretrained=False)
    if args.mode == "train":
        return model.train()
    model.eval()
    if args.mode == "score":
        model, pooled = apply_test_time_pool(model, {"input_size": (3, args.size, args.size)})
        if not pooled:
            sys.exit("error: timm applies test-time pooling only above the training size %d, not at --size %d"
                     % (model.default_cfg["input_size"][-1], args.size))
    return model


def make_step(args, model):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch_size, 3, args.size, args.size, generator=generator) * 2 - 1
    labels = torch.randint(0, 1000, (args.batch_size,), generator=generator)
    if args.mode != "train":
        def infer():
            with torch.inference_mode():
                model(images)
        return infer
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def train():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return train


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args)
    times = benchmarking.step_times(make_step(args, model), args.warmup, args.repeats)
    benchmarking.report("timm", args, args.batch_size, times, threads=torch.get_num_threads(),
                        versions="timm %s, torch %s" % (timm.__version__, torch.__version__))


if __name__ == "__main__":
    main()
