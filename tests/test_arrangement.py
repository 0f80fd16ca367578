"""Arrangements are independent switches: each one alone, and each CPU arrangement without one of them, trains the
authors' network (or is refused); binding settings last for the bind."""
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


@pytest.mark.parametrize("network", ["dpn68", DPN92_SHORT], ids=["dpn68", "dpn92-short"])
def test_each_switch_alone_and_each_left_out_trains_the_authors_network(network):
    """DPN-68 (a 10-channel stem, 4 channels per group) and DPN-92's layouts: the gradients of every arrangement
    one switch away from a preset or from the authors' graph are the authors' in float64, to float32 rounding."""
    exact = symbols.get_symbol(network, 10, image_size=SIZE)
    args, aux = random_params(exact, seed=11, data_shape=(BATCH, 3, SIZE, SIZE))
    rng = np.random.RandomState(12)
    batch = rng.uniform(-1, 1, (BATCH, 3, SIZE, SIZE)), rng.randint(0, 10, BATCH)
    truth = gradients(exact, args, aux, *batch, "float64")
    changes = single_changes()
    assert len(changes) > 10
    for label, arrangement in changes.items():
        values = gradients(symbols.get_symbol(network, 10, image_size=SIZE, arrangement=arrangement), args, aux,
                           *batch, "float32")
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
