"""The CPU arrangements are the authors' network: same parameter files, outputs and gradients."""
import json
import re

import mxnet as mx
import numpy as np
import pytest

import symbols
from dpn_mxnet import arrangement_policy, checkpoint, identify
from dpn_mxnet.evaluation import inference_module

from checkpoints import assert_depends_on_input, msra_params
from test_score_graph import structured_images

# DPN-68 (4 and 8 channels per group: merged groups), DPN-68b (split last 1x1) and a DPN-92 cut to one or two
# units per stage: 3, 6, 12 and 24 channels per group and the dense growth of 24 (plain-layout units) of DPN-92;
# each in both forms of the variant.
DPN92_SHORT = ('{"stem_filters": 64, "stem_kernel": 7, "k_r": 96, "groups": 32, "k_sec": [1, 2, 2, 1], '
               '"inc_sec": [16, 32, 24, 128], "bw_base": 256}')
FORMS = {"dpn68": ("dpn68", symbols.CPU), "dpn68-lean": ("dpn68", symbols.CPU_LEAN), "dpn68b": ("dpn68b", symbols.CPU),
         "dpn68b-lean": ("dpn68b", symbols.CPU_LEAN), "dpn92-short": (DPN92_SHORT, symbols.CPU),
         "dpn92-short-lean": (DPN92_SHORT, symbols.CPU_LEAN)}
BATCH, SIZE = 8, 112


def random_params(symbol, seed, data_shape=(BATCH, 3, SIZE, SIZE)):
    """Small random weights and BN statistics (kept positive) for every parameter of ``symbol``: enough for a
    training step, where every BatchNorm normalises with its batch's statistics, to depend on the input; not in
    inference mode (``checkpoints.msra_params`` there)."""
    rng = np.random.RandomState(seed)
    arg_shapes, aux_shapes = identify.parameter_shapes(symbol, data_shape)
    args = {n: mx.nd.array(rng.normal(0, 0.05, s)) for n, s in arg_shapes.items()}
    aux = {n: mx.nd.array(rng.uniform(0.5, 1.5, s)) for n, s in aux_shapes.items()}
    return args, aux


def as_float64(arrays):
    return {n: a.asnumpy().astype(np.float64) for n, a in arrays.items()}


def training_step(symbol, args, aux, images, labels, dtype="float32"):
    """One training forward and backward in ``dtype``: (probabilities, parameter gradients, BN statistics after
    the step), as float64 arrays. In float64 MXNet runs its own kernels instead of oneDNN's."""
    inputs = {n: v.astype(dtype) for n, v in args.items()}
    inputs.update(data=mx.nd.array(images, dtype=dtype), softmax_label=mx.nd.array(labels, dtype=dtype))
    grads = {n: mx.nd.zeros_like(inputs[n]) for n in args}
    stats = {n: v.astype(dtype) for n, v in aux.items()}
    executor = symbol.bind(mx.cpu(), inputs, args_grad=grads, aux_states=stats,
                           grad_req={n: "write" if n in grads else "null" for n in inputs})
    out = executor.forward(is_train=True)[0].asnumpy()
    executor.backward()
    return out.astype(np.float64), as_float64(grads), as_float64(stats)


def relative_error(values, truth, names):
    """Relative L2 error of the arrays ``names``, taken together."""
    return np.sqrt(sum(np.sum((values[n] - truth[n]) ** 2) for n in names) / sum(np.sum(truth[n] ** 2) for n in names))


@pytest.fixture(scope="module", params=list(FORMS))
def steps(request):
    """One training step of the authors' graph in float64 and float32, and of the variant in float32."""
    network, form = FORMS[request.param]
    exact = symbols.get_symbol(network, image_size=SIZE)
    fast = symbols.get_symbol(network, image_size=SIZE, arrangement=form)
    args, aux = random_params(exact, seed=1)
    batch = structured_images(SIZE, BATCH, seed=2), np.random.RandomState(2).randint(0, 1000, BATCH)
    return (exact, fast, aux, training_step(exact, args, aux, *batch, dtype="float64"),
            training_step(exact, args, aux, *batch), training_step(fast, args, aux, *batch))


def test_variant_has_the_parameters_of_the_authors_graph(steps):
    exact, fast = steps[:2]
    shapes = [dict(zip(s.list_arguments() + s.list_auxiliary_states(),
                       sum(map(list, s.infer_shape(data=(1, 3, SIZE, SIZE))[::2]), []))) for s in (exact, fast)]
    assert shapes[0] == shapes[1]


def test_outputs_and_statistics_match_the_authors_graph(steps):
    aux, truth, exact, fast = steps[2:]
    assert_depends_on_input(truth[0], 1e-5 * truth[0].max())
    for step in (exact, fast):
        np.testing.assert_allclose(step[0], truth[0], rtol=1e-5, atol=1e-8)
        for name, stat in truth[2].items():
            assert not np.allclose(stat, aux[name].asnumpy()), name  # the step did update the running statistics
            np.testing.assert_allclose(step[2][name], stat, rtol=1e-5, atol=1e-7, err_msg=name)


def test_gradients_match_the_authors_graph(steps):
    """Against the float64 gradients of the authors' graph, the variant's float32 gradients are off by float32
    rounding, as the authors' graph in float32 is: float32 sums in another order, and through them a few ReLU
    inputs within rounding of zero that land on the other side, which moves the gradients below them by ~1e-3."""
    truth, exact, fast = (step[1] for step in steps[3:])
    assert fast.keys() == exact.keys() == truth.keys()
    for values in (exact, fast):
        assert relative_error(values, truth, truth) < 1e-2
        for name in truth:
            assert relative_error(values, truth, [name]) < 5e-2, name


def test_inference_outputs_match_the_authors_graph():
    """In inference mode (running statistics, oneDNN's fused inference kernels) too, for DPN-92's layouts: both
    forms as arranged for training, and the fast form as arranged for inference, its weights precomputed (as
    prediction and scoring bind it). The logits are compared: they differ from image to image."""
    exact = symbols.get_symbol(DPN92_SHORT, image_size=SIZE)
    args, aux = msra_params(exact, seed=4, data_shape=(BATCH, 3, SIZE, SIZE))
    images = structured_images(SIZE, BATCH, seed=5)
    graphs = [(exact.get_children()[0], args, "float64"), (exact.get_children()[0], args, "float32")]
    graphs += [(symbols.get_symbol(DPN92_SHORT, image_size=SIZE, arrangement=form).get_children()[0], args, "float32")
               for form in (symbols.CPU, symbols.CPU_LEAN)]
    graphs.append(symbols.precompute_weights(symbols.logits(DPN92_SHORT, image_size=SIZE,
                                                            arrangement=symbols.CPU.for_inference()), args)
                  + ("float32",))
    outputs = []
    for symbol, params, dtype in graphs:
        inputs = {n: params[n].astype(dtype) for n in symbol.list_arguments() if n in params}
        inputs.update(data=mx.nd.array(images, dtype=dtype))
        executor = symbol.bind(mx.cpu(), inputs, aux_states={n: v.astype(dtype) for n, v in aux.items()},
                               grad_req="null")
        outputs.append(executor.forward(is_train=False)[0].asnumpy().astype(np.float64))
    tolerance = 1e-5 * np.abs(outputs[0]).max()
    assert_depends_on_input(outputs[0], tolerance)
    for out in outputs[1:]:
        np.testing.assert_allclose(out, outputs[0], rtol=1e-5, atol=tolerance)


def convolution_weights(symbol):
    """The op of the node that gives each Convolution its weight ("null" for a variable)."""
    nodes = json.loads(symbol.tojson())["nodes"]
    return {n["name"]: nodes[n["inputs"][1][0]]["op"] for n in nodes if n["op"] == "Convolution"}


def test_precomputed_weights_are_bound_arrays():
    """The inference arrangement computes convolution weights in the graph (merged groups, weight rows); after
    precompute_weights every convolution reads a variable, whose value is the computed weight."""
    for_inference = symbols.logits("dpn68", image_size=SIZE, arrangement=symbols.CPU.for_inference())
    args, _ = random_params(symbols.get_symbol("dpn68", image_size=SIZE), seed=6)
    before = convolution_weights(for_inference)
    assert set(before.values()) - {"null"}, "no computed weights left to test"
    symbol, params = symbols.precompute_weights(for_inference, args)
    assert convolution_weights(symbol) == dict.fromkeys(before, "null")
    merged = params["conv2_x__1_c3x3-b__conv_weight-computed"].asnumpy()  # 4 channels per group, merged 4 by 4
    grouped = args["conv2_x__1_c3x3-b__conv_weight"].asnumpy()
    assert merged.shape == (grouped.shape[0], 16, 3, 3)
    for out in range(merged.shape[0]):
        group = out // 4 % 4
        np.testing.assert_array_equal(merged[out, 4 * group:4 * group + 4], grouped[out])
        assert not np.delete(merged[out], np.s_[4 * group:4 * group + 4], axis=0).any()
    exact = symbols.logits("dpn68", image_size=SIZE)
    assert symbols.precompute_weights(exact, args) == (exact, args)
    with pytest.raises(ValueError, match="missing for the convolution weights: conv2_x__1_c3x3-b__conv_weight"):
        symbols.precompute_weights(for_inference, {n: v for n, v in args.items() if "c3x3-b" not in n})


def test_lean_form_plans_less_memory():
    """MXNet's memory plan for a DPN-68 training step (its "Total ... MB allocated"): the lean form needs less than
    the variant it trades speed against."""
    planned = {}
    for form in (symbols.CPU, symbols.CPU_LEAN):
        with arrangement_policy.bind_settings(form):
            executor = symbols.get_symbol("dpn68", image_size=SIZE, arrangement=form).simple_bind(
                mx.cpu(), data=(BATCH, 3, SIZE, SIZE), softmax_label=(BATCH,))
        planned[form] = int(re.search(r"Total (\d+) MB allocated", executor.debug_str()).group(1))
    assert planned[symbols.CPU_LEAN] < 0.8 * planned[symbols.CPU], planned


def test_checkpoints_pass_both_ways(tmp_path):
    """A Module training the variant writes the parameter file the authors' graph reads, and vice versa."""
    exact = symbols.get_symbol("dpn68", image_size=SIZE)
    fast = symbols.get_symbol("dpn68", image_size=SIZE, arrangement=symbols.CPU)
    args, aux = random_params(exact, seed=3)
    module = mx.mod.Module(fast, context=mx.cpu())
    module.bind(data_shapes=[("data", (1, 3, SIZE, SIZE))], label_shapes=[("softmax_label", (1,))])
    module.init_params(arg_params=args, aux_params=aux)
    module.save_checkpoint(str(tmp_path / "fast"), 1)
    loaded = checkpoint.load_params(checkpoint.params_path(str(tmp_path / "fast"), 1))
    for stored, original in zip(loaded, (args, aux)):
        assert stored.keys() == original.keys()
        for name, value in original.items():
            np.testing.assert_array_equal(stored[name].asnumpy(), value.asnumpy())
    back = mx.mod.Module(exact, context=mx.cpu())
    back.bind(data_shapes=[("data", (1, 3, SIZE, SIZE))], label_shapes=[("softmax_label", (1,))])
    back.set_params(*loaded)  # raises on a missing or extra name
    back.save_params(str(tmp_path / "exact.params"))
    module.load_params(str(tmp_path / "exact.params"))
    assert sorted(module.get_params()[0]) == sorted(args)


def test_variant_is_chosen_for_cpus_only(monkeypatch):
    assert arrangement_policy.onednn_cpus([mx.cpu()])
    assert not arrangement_policy.onednn_cpus([mx.gpu(0)])
    assert not arrangement_policy.onednn_cpus([mx.cpu(), mx.gpu(1)])
    monkeypatch.setenv("MXNET_MKLDNN_ENABLED", "0")
    assert not arrangement_policy.onednn_cpus([mx.cpu()])


def test_arrangement_choices():
    assert arrangement_policy.choose("authors", [mx.cpu()]) == "authors"
    assert arrangement_policy.choose("auto", [mx.gpu(0)]) == "authors"
    assert arrangement_policy.choose("auto", [mx.cpu()], "float16") == "authors"
    assert arrangement_policy.choose("auto", [mx.cpu()]) == "cpu"
    assert arrangement_policy.choose("cpu-lean", [mx.cpu()]) == "cpu-lean"
    for choice, contexts, message in (("cpu", [mx.gpu(0)], "needs CPU contexts"),
                                      ("fast", [mx.cpu()], "expected one of auto, authors, cpu, cpu-lean"),
                                      ("cpu-lean", [mx.cpu()], "float32 only")):
        with pytest.raises(ValueError, match=message):
            arrangement_policy.choose(choice, contexts, "float16")


def test_variant_refuses_half_precision():
    with pytest.raises(ValueError, match="float32 only"):
        symbols.get_symbol("dpn68", dtype="float16", arrangement=symbols.CPU)


NAMED_IMAGES = structured_images(64, 4, seed=0)
NAMED_LABELS = np.arange(4)


@pytest.fixture(scope="module")
def authors_step():
    """network -> (args, aux, a float32 training step of the authors' graph at 64 px, 10 classes), computed once
    for both forms."""
    steps = {}

    def step(network):
        if network not in steps:
            exact = symbols.get_symbol(network, 10, image_size=64)
            args, aux = random_params(exact, seed=9, data_shape=NAMED_IMAGES.shape)
            steps[network] = args, aux, training_step(exact, args, aux, NAMED_IMAGES, NAMED_LABELS)
        return steps[network]
    return step


@pytest.mark.parametrize("form", [symbols.CPU, symbols.CPU_LEAN])
def test_variant_trains_every_named_dpn(form, authors_step):
    """Both forms bind and run a training step for every variant (oneDNN refuses some layout mixes), with the
    outputs, gradients and updated BN statistics of the authors' graph (float32 both; the sizes differ per
    variant)."""
    for network in symbols.VARIANTS:
        args, aux, truth = authors_step(network)
        step = training_step(symbols.get_symbol(network, 10, image_size=64, arrangement=form), args, aux, NAMED_IMAGES,
                             NAMED_LABELS)
        assert_depends_on_input(truth[0], 1e-5 * truth[0].max())
        np.testing.assert_allclose(step[0], truth[0], rtol=1e-5, atol=1e-8, err_msg=network)
        assert step[1].keys() == truth[1].keys()
        assert relative_error(step[1], truth[1], truth[1]) < 1e-2, network
        for name, stat in truth[2].items():
            np.testing.assert_allclose(step[2][name], stat, rtol=1e-4, atol=1e-5 * np.abs(stat).max(),
                                       err_msg=network + " " + name)


def test_inference_arrangement_matches_for_every_named_dpn():
    """Bound as prediction binds it (dpn_mxnet.evaluation.inference_module), the inference arrangement of every
    variant gives the authors' graph's logits (oneDNN refuses some layout mixes; the sizes differ per variant)."""
    images = mx.nd.array(structured_images(64, 2, seed=7))
    for network in symbols.VARIANTS:
        exact = symbols.logits(network, 10, image_size=64)
        args, aux = msra_params(exact, seed=8, data_shape=(2, 3, 64, 64))
        logits = []
        for symbol in (exact, symbols.logits(network, 10, image_size=64, arrangement=symbols.CPU.for_inference())):
            module = inference_module(symbol, [mx.cpu()], [("data", (2, 3, 64, 64))], None, args, aux)
            module.forward(mx.io.DataBatch([images]), is_train=False)
            logits.append(module.get_outputs()[0].asnumpy())
        assert_depends_on_input(logits[0], 1e-4 * np.abs(logits[0]).max())
        np.testing.assert_allclose(logits[1], logits[0], rtol=1e-4, atol=1e-4 * np.abs(logits[0]).max(),
                                   err_msg=network)

