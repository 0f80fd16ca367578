"""A checkpoint loaded for inference: what scoring, prediction, ONNX export and BN refinement share (load the
checkpoint, work out its network, its class names and its size, bind a graph of it in an arrangement)."""
from dataclasses import dataclass

import symbols

from . import arrangement_policy, checkpoint, identify
from .checks import DataError
from .evaluation import inference_module
from .packing import IMAGENET_CLASSES, read_class_table


@dataclass
class Model:
    checkpoint: checkpoint.Checkpoint
    spec: identify.ModelSpec
    size: int           # the input size asked for, else the training size
    classes: list       # (id, name) per label

    def bind(self, graph, contexts, data_shapes, label_shapes=None, arrangement="auto"):
        """(Module bound for inference, name of its arrangement): ``graph(spec, size, arrangement)`` gives the
        symbol, in the arrangement that ``--arrangement arrangement`` chooses on ``contexts``."""
        name = arrangement_policy.choose(arrangement, contexts)
        chosen = symbols.ARRANGEMENTS[name].for_inference()
        module = inference_module(graph(self.spec, self.size, chosen), contexts, data_shapes, label_shapes,
                                  self.checkpoint.arg_params, self.checkpoint.aux_params, chosen)
        return module, name


def load_model(prefix, epoch, network=None, num_classes=None, size=None, classes=None):
    """The checkpoint ``prefix-epoch`` with its network (``identify.model_spec``) and class names: the file
    ``classes`` if given, else those the checkpoint carries, else ImageNet-1k's for 1000 classes, else numbers."""
    ckpt = checkpoint.load(prefix, epoch)
    spec = identify.model_spec(ckpt, network, num_classes)
    return Model(ckpt, spec, size or spec.train_size, class_table(ckpt.info, spec.num_classes, classes))


def class_table(info, num_classes, path=None):
    """(id, name) per class, from the class index file ``path``, the checkpoint's model info ``info``, the
    ImageNet-1k index (1000 classes) or the class numbers."""
    carried = (info or {}).get("classes")
    if path is None and carried:
        table, source = [tuple(row) for row in carried], "the checkpoint's class list"
    elif path is None and num_classes != 1000:
        return [(str(i), str(i)) for i in range(num_classes)]
    else:
        table, source = read_class_table(path or IMAGENET_CLASSES), path or IMAGENET_CLASSES
    if len(table) != num_classes:
        raise DataError("%s lists %d classes but the checkpoint has %d" % (source, len(table), num_classes))
    return table
