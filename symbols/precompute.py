"""Convolution weights that a graph assembles from its parameters, computed once for a graph bound for inference.

The CPU arrangements (``symbols.cpu_fast``) build some convolution weights inside the graph: block-diagonal merges
of grouped weights, slices of weight rows, zero rows stacked under them. In inference they are the same at every
forward pass, and MXNet's oneDNN backend folds a following BatchNorm into a convolution only when its weight is a
bound array (a computed one changes version at every pass, which makes the fused operator fold it again).
"""
import json

import mxnet as mx


def _computed_weights(nodes):
    """(node, output) entries that are the weight of some Convolution and are computed, not variables, mapped to
    the name of the first such Convolution."""
    entries = {}
    for node in nodes:
        if node["op"] == "Convolution":
            source, index = node["inputs"][1][:2]
            if nodes[source]["op"] != "null":
                entries.setdefault((source, index), node["name"])
    return entries


def precompute_weights(symbol, arg_params):
    """(``symbol`` with each computed convolution weight replaced by a variable ``<convolution>_weight-computed``,
    ``arg_params`` with those variables' values added). A graph without computed weights comes back as it is."""
    graph = json.loads(symbol.tojson())
    nodes = graph["nodes"]
    entries = _computed_weights(nodes)
    if not entries:
        return symbol, arg_params
    weights = mx.sym.load_json(json.dumps(dict(graph, heads=[[i, k, 0] for i, k in entries])))
    missing = sorted(set(weights.list_arguments()) - set(arg_params))
    if missing:
        raise ValueError("parameters missing for the convolution weights: %s" % ", ".join(missing))
    values = weights.eval(ctx=mx.cpu(), **{name: arg_params[name] for name in weights.list_arguments()})
    params = dict(arg_params)
    replacement = {}
    for (entry, conv_name), value in zip(entries.items(), values):
        name = conv_name + "_weight-computed"
        replacement[entry] = [len(nodes), 0, 0]
        nodes.append({"op": "null", "name": name, "attrs": {"__shape__": str(value.shape)}, "inputs": []})
        params[name] = value
    for node in nodes:
        node["inputs"] = [replacement.get(tuple(e[:2]), e) for e in node["inputs"]]
    graph["arg_nodes"] = [i for i, node in enumerate(nodes) if node["op"] == "null"]
    graph.pop("node_row_ptr", None)
    return mx.sym.load_json(json.dumps(graph)), params
