"""Arrangements are independent switches: each one alone, and each CPU arrangement without one of them, trains the
authors' network (or is refused); binding settings last for the bind."""
import json
import os
from dataclasses import fields, replace

import mxnet as mx
import numpy as np
import pytest

import symbols
from symbols import Arrangement
from dpn_mxnet import arrangement_policy

from test_fast_variant import DPN92_SHORT, as_float64, random_params, relative_error

SIZE, BATCH = 64, 4


def allowed(**switches):
    """The arrangement with these switches, or None where Arrangement refuses it."""
    try:
        return Arrangement(**switches)
    except ValueError:
        return None


def single_changes():
    """{label: arrangement}: every switch alone (pack_units with the split_weight_rows it needs), and every preset
    with one switch turned off, where Arrangement allows it."""
    on = {f.name: True for f in fields(Arrangement)}
    changes = {"only " + name: allowed(**{name: True}, **({"split_weight_rows": True} if name == "pack_units" else {}))
               for name in on}
    for preset_name, preset in list(symbols.ARRANGEMENTS.items()) + [("cpu for inference",
                                                                        symbols.CPU.for_inference())]:
        for name in on:
            if getattr(preset, name):
                changes["%s without %s" % (preset_name, name)] = allowed(**dict(vars(preset), **{name: False}))
    return {label: arrangement for label, arrangement in changes.items() if arrangement is not None}


def gradients(symbol, args, aux, images, labels, dtype):
    inputs = {n: v.astype(dtype) for n, v in args.items()}
    inputs.update(data=mx.nd.array(images, dtype=dtype), softmax_label=mx.nd.array(labels, dtype=dtype))
    grads = {n: mx.nd.zeros_like(inputs[n]) for n in args}
    executor = symbol.bind(mx.cpu(), inputs, args_grad=grads, aux_states={n: v.astype(dtype) for n, v in aux.items()},
                           grad_req={n: "write" if n in grads else "null" for n in inputs})
    executor.forward(is_train=True)
    executor.backward()
    return as_float64(grads)


CHANGES = single_changes()


@pytest.fixture(scope="module", params=["dpn68", DPN92_SHORT], ids=["dpn68", "dpn92-short"])
def authors_step(request):
    """DPN-68 (a 10-channel stem, 4 channels per group) or DPN-92's layouts: random parameters, a batch and the
    authors' gradients in float64."""
    network = request.param
    exact = symbols.get_symbol(network, 10, image_size=SIZE)
    args, aux = random_params(exact, seed=11, data_shape=(BATCH, 3, SIZE, SIZE))
    rng = np.random.RandomState(12)
    batch = rng.uniform(-1, 1, (BATCH, 3, SIZE, SIZE)), rng.randint(0, 10, BATCH)
    return network, args, aux, batch, gradients(exact, args, aux, *batch, "float64")


def test_every_switch_has_neighbours():
    assert len(CHANGES) > 10


@pytest.mark.parametrize("label", list(CHANGES))
def test_each_switch_alone_and_each_left_out_trains_the_authors_network(authors_step, label):
    """The gradients of every arrangement one switch away from a preset or from the authors' graph are the
    authors' in float64, to float32 rounding; an arrangement that MXNet cannot build or bind fails with its
    label."""
    network, args, aux, batch, truth = authors_step
    try:
        values = gradients(symbols.get_symbol(network, 10, image_size=SIZE, arrangement=CHANGES[label]), args, aux,
                           *batch, "float32")
    except (mx.MXNetError, ValueError) as error:
        pytest.fail("arrangement %r (%s) cannot be built or trained: %s" % (label, CHANGES[label], error))
    assert relative_error(values, truth, truth) < 1e-2, label
    for name in truth:
        assert relative_error(values, truth, [name]) < 5e-2, (label, name)


def test_combinations_that_train_wrongly_are_refused():
    """Without merged groups or widened 1x1-a inputs, oneDNN's fused BN-ReLU returns wrong gradients for DPN-68
    (measured: docs/cpu_arrangement.md); pack_units is built from split weight rows."""
    for switches in ({"fuse_bn_relu": True}, {"fuse_bn_relu": True, "merge_groups": True},
                     dict(vars(symbols.CPU), widen_1x1a_input=False), {"pack_units": True}):
        with pytest.raises(ValueError, match="needs"):
            Arrangement(**switches)
    assert symbols.CPU.for_inference() == replace(symbols.CPU, widen_1x1a_input=False, fold_for_inference=True)
    assert symbols.CPU_LEAN.for_inference() == symbols.CPU_LEAN
    assert symbols.AUTHORS.for_inference() == symbols.AUTHORS == Arrangement()


def test_bind_settings_last_for_the_bind(monkeypatch):
    """The CPU arrangements bind with BIND_ENVIRONMENT, which is gone afterwards; the user's own value wins."""
    name, value = next(iter(arrangement_policy.BIND_ENVIRONMENT.items()))
    monkeypatch.delenv(name, raising=False)
    for arrangement, during in ((symbols.CPU, value), (symbols.CPU_LEAN, value), (symbols.AUTHORS, None)):
        with arrangement_policy.bind_settings(arrangement):
            assert os.environ.get(name) == during
        assert name not in os.environ
    monkeypatch.setenv(name, "4")
    with arrangement_policy.bind_settings(symbols.CPU):
        assert os.environ[name] == "4"
    assert os.environ[name] == "4"


def fused_bn_relu_readers(symbol):
    """{fused BN-ReLU name: [(op, output width) of each node that reads it]} in ``symbol``'s graph."""
    nodes = json.loads(symbol.tojson())["nodes"]
    readers = {node["name"]: [] for node in nodes if node["op"] == "_contrib_BatchNormWithReLU"}
    for node in nodes:
        for source, _, _ in node["inputs"]:
            if nodes[source]["name"] in readers:
                readers[nodes[source]["name"]].append((node["op"], int(node["attrs"].get("num_filter", 0))))
    return readers


@pytest.mark.parametrize("network", ["dpn92", "dpn107", "dpn68b"])
def test_fused_bn_relu_only_before_convolutions_that_return_blocks(network):
    """oneDNN's BatchNormWithReLU cannot take a gradient in another layout than its input's 16-channel blocks, and
    a 1x1 convolution of a width that is not a multiple of 16 returns 8-channel blocks on AVX-512 CPUs too (DPN-92's
    dense growth of 24, DPN-107's of 20, docs/cpu_arrangement.md): in every arrangement the fused BN-ReLU is read by
    convolutions of such widths only."""
    assert fused_bn_relu_readers(symbols.get_symbol(network, arrangement=symbols.CPU))
    for label, arrangement in list(CHANGES.items()) + list(symbols.ARRANGEMENTS.items()):
        readers = fused_bn_relu_readers(symbols.get_symbol(network, arrangement=arrangement))
        for name, reading in readers.items():
            assert reading and all(op == "Convolution" and width % 16 == 0 for op, width in reading), \
                (label, name, reading)
