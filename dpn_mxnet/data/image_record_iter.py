"""MXNet's ImageRecordIter, guarded: unknown parameter names refused, C++ errors as one-line DataErrors; its decode
thread cap and its normalisation parameters."""
import difflib
import os
import re

import mxnet as mx

from ..checks import DataError, describe_error
from .pixels import MEAN_RGB, SCALE


def _record_iter_params():
    """Parameter names documented in ImageRecordIter's docstring (the C++ iterator ignores any other name)."""
    return set(re.findall(r"^(\w+) : ", mx.io.ImageRecordIter.__doc__, flags=re.M))


def record_iter(**kwargs):
    """``mx.io.ImageRecordIter(**kwargs)``, refusing names it does not document (it would silently ignore a typo)
    and turning its C++ errors into one-line DataErrors."""
    known = _record_iter_params()
    for name in kwargs:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise DataError("ImageRecordIter has no parameter %r%s" % (name, " (did you mean %r?)" % close[0]
                                                                        if close else ""))
    try:
        return mx.io.ImageRecordIter(**kwargs)
    except mx.base.MXNetError as err:
        raise DataError("ImageRecordIter(%s): %s" % (kwargs.get("path_imgrec"), describe_error(err))) from None


def record_iter_threads():
    """The most decode threads ImageRecordIter will use: it caps ``preprocess_threads`` at half the CPUs it may run
    on (assuming two hyper-threads per core), so on a 2-CPU machine it decodes on one thread."""
    return max(len(os.sched_getaffinity(0)) // 2, 1)


def normalisation():
    """ImageRecordIter's parameters for (pixel - MEAN_RGB) * SCALE."""
    return dict(mean_r=MEAN_RGB[0], mean_g=MEAN_RGB[1], mean_b=MEAN_RGB[2], scale=SCALE)

