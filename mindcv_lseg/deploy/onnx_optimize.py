"""Post-processing of the ONNX graphs written by MindSpore 2.10's exporter (needs the ``onnx`` package, ``[onnx]``).

MindSpore's ONNX exporter writes every shape the network computes as a constant of the example input's shape (every
``Reshape`` target, the ``OneHot`` depth, the positional-embedding and causal-mask slices), so its graphs only run at
the export shape, even with ``dynamic_axes``. For the CLIP text graph that costs speed: with ``[N, 77]`` tokens it
runs the 12 transformer layers over all 77 positions, where the eager ``LSeg.encode_text`` runs only over the
columns up to the last end token (16 for short labels: ~5x less work).

:func:`make_text_dynamic` rewrites those constants of the text graph as functions of the ``tokens`` input's shape
(``Shape`` -> ``Gather`` / ``Concat``), so that one graph takes ``[n, L]`` for any n and L <= 77. It recognises
the constants the exporter writes for ``CLIPTextEncoder`` and refuses (``OnnxRewriteError``) a reshape to another
form holding L; :func:`check_text_dynamic` then runs the rewritten graph in ONNX Runtime at other shapes against the
static one, and only a graph that agrees replaces it (otherwise the exporter keeps the static graph and says why).
"""

from typing import Optional

import numpy as np

__all__ = [
    "OnnxRewriteError",
    "make_text_dynamic",
    "check_text_dynamic",
    "optimize_text_graph",
    "merge_head_convs",
    "l2_norm_as_conv",
    "erf_gelu",
    "optimize_image_graph",
]


class OnnxRewriteError(RuntimeError):
    """The graph holds a shape constant this module does not know how to rewrite."""


_SMALL = 1 << 20  # elements: constants up to this size are read into numpy (not the weight matrices)


def _constants(graph, limit: int = _SMALL):
    """name -> numpy value of every initializer of at most ``limit`` elements and every ``Constant`` node output."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer if int(np.prod(t.dims)) <= limit}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _prune(graph):
    """Drop ``Constant`` nodes and initializers no node uses any more (ONNX Runtime warns about each)."""
    used = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
    nodes = [node for node in graph.node if node.op_type != "Constant" or node.output[0] in used]
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def make_text_dynamic(model, input_name: str = "tokens", output_name: str = "text_features"):
    """Rewrite the static ``[N, L]`` text graph ``model`` (an ``onnx.ModelProto``, changed in place and returned) so
    that its ``input_name`` and ``output_name`` have a dynamic first dimension (labels) and the input a dynamic
    second one (token columns, at most the exported L).

    Rewritten: ``Reshape`` targets ``[N, L, ...]`` and ``[N, 1, L]``, the ``OneHot`` depth L, and the ``Slice`` nodes
    that take the positional embedding ``[L, C]`` and the causal mask ``[L, L]`` whole. The result is only trusted
    after :func:`check_text_dynamic`.

    Raises:
        OnnxRewriteError: a ``Reshape`` target holds L (or N*L) in another form, or a sliced constant is not L long.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    inp = next((i for i in graph.input if i.name == input_name), None)
    out = next((o for o in graph.output if o.name == output_name), None)
    if inp is None or out is None:
        raise OnnxRewriteError(f"the graph has no input {input_name!r} / output {output_name!r}")
    n, length = (d.dim_value for d in inp.type.tensor_type.shape.dim)
    consts = _constants(graph)

    # the tokens' shape, computed once at the top of the graph: [n, L] (int64), n and L as 1-element tensors
    def name(suffix):
        return f"lseg_dyn_{suffix}"

    top = [
        helper.make_node("Shape", [input_name], [name("shape")]),
        helper.make_node("Gather", [name("shape"), name("i0")], [name("n")], axis=0),
        helper.make_node("Gather", [name("shape"), name("i1")], [name("len")], axis=0),
        helper.make_node("Gather", [name("shape"), name("s1")], [name("len_scalar")], axis=0),
    ]
    graph.initializer.extend(
        [
            helper.make_tensor(name("i0"), TensorProto.INT64, [1], [0]),
            helper.make_tensor(name("i1"), TensorProto.INT64, [1], [1]),
            helper.make_tensor(name("s1"), TensorProto.INT64, [], [1]),
            helper.make_tensor(name("zeros2"), TensorProto.INT64, [2], [0, 0]),
            helper.make_tensor(name("axes01"), TensorProto.INT64, [2], [0, 1]),
            helper.make_tensor(name("zero1"), TensorProto.INT64, [1], [0]),
        ]
    )
    new_nodes, counter = [], [0]

    def concat(parts):
        """A Concat node of the given (names of) int64 1-D tensors; returns its output name."""
        counter[0] += 1
        out_name = name(f"shape{counter[0]}")
        new_nodes.append(helper.make_node("Concat", parts, [out_name], axis=0))
        return out_name

    def const(values):
        counter[0] += 1
        c = name(f"c{counter[0]}")
        graph.initializer.append(helper.make_tensor(c, TensorProto.INT64, [len(values)], list(values)))
        return c

    for node in graph.node:
        if node.op_type == "Reshape" and node.input[1] in consts:
            target = [int(v) for v in consts[node.input[1]].ravel()]
            if len(target) >= 2 and target[:2] == [n, length]:  # [N, L, ...] -> concat(shape, rest)
                rest = [const(target[2:])] if target[2:] else []
                node.input[1] = concat([name("shape")] + rest)
            elif target == [n, 1, length]:  # the one-hot end-token rows [N, 1, L]
                node.input[1] = concat([name("n"), const([1]), name("len")])
            elif length in target or n * length in target:
                raise OnnxRewriteError(f"Reshape {node.name} to {target}: unknown use of the example shape")
        elif node.op_type == "OneHot" and node.input[1] in consts and int(consts[node.input[1]]) == length:
            node.input[1] = name("len_scalar")
        elif node.op_type == "Slice" and node.input[0] in consts and getattr(consts.get(node.input[1]), "size", 1) == 0:
            # the positional embedding [L, C] or the causal mask [L, L], "sliced" over no axis at the example length
            data = consts[node.input[0]]
            if data.shape[0] != length:
                raise OnnxRewriteError(f"Slice {node.name} of a constant {list(data.shape)}: not the L rows expected")
            if data.ndim == 2 and data.shape[1] == length:
                node.input[1:] = [name("zeros2"), concat([name("len"), name("len")]), name("axes01")]
            else:
                node.input[1:] = [name("zero1"), name("len"), name("zero1")]
    nodes = top + new_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    _prune(graph)  # the replaced shape constants
    del graph.value_info[:]  # the exporter's intermediate shapes are the static ones
    dims = inp.type.tensor_type.shape.dim
    dims[0].dim_param, dims[1].dim_param = "labels", "columns"
    out.type.tensor_type.shape.dim[0].dim_param = "labels"
    return model


def check_text_dynamic(static_path: str, dynamic_model, atol: float = 1e-5) -> Optional[str]:
    """Run the rewritten text graph in ONNX Runtime against the static one; returns ``None`` if it agrees, else what
    differs. Checked on synthetic token rows (end tokens within the first 13 columns): the export shape ``[N, L]``
    (same features) and ``[2N + 1, 16]`` (the static graph's rows for the same labels)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # no warnings about the exporter's unused initializers
    static = ort.InferenceSession(static_path, opts, providers=["CPUExecutionProvider"])
    dynamic = ort.InferenceSession(dynamic_model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    n, length = static.get_inputs()[0].shape
    rng = np.random.default_rng(0)
    tokens = np.zeros((n, length), np.int32)
    tokens[:, 0] = 49406  # start token
    for row in range(n):
        end = 1 + row % 12
        tokens[row, 1:end] = rng.integers(1, 49000, end - 1)
        tokens[row, end] = 49407  # end token (the largest id)
    ref = static.run(None, {"tokens": tokens})[0]
    got = dynamic.run(None, {"tokens": tokens})[0]
    if got.shape != ref.shape or np.abs(got - ref).max() > atol:
        return f"at the export shape {[n, length]}: max abs difference {np.abs(got - ref).max():.3g}"
    rows = np.concatenate([tokens] * 2 + [tokens[:1]])  # 2N + 1 rows
    got = dynamic.run(None, {"tokens": np.ascontiguousarray(rows[:, :16])})[0]
    want = np.concatenate([ref] * 2 + [ref[:1]])
    if got.shape != want.shape or np.abs(got - want).max() > atol:
        return f"at [{len(rows)}, 16]: max abs difference {np.abs(got - want).max():.3g}"
    return None


def optimize_text_graph(path: str, log=print) -> bool:
    """Make the ONNX text graph at ``path`` dynamic in place (:func:`make_text_dynamic`, checked with
    :func:`check_text_dynamic`). Returns True if the file was rewritten; False (file untouched, reason logged) when
    ``onnx`` / ``onnxruntime`` are missing or the rewrite does not apply or does not check out."""
    try:
        import onnx
        import onnxruntime  # noqa: F401
    except ImportError:
        log("text graph kept at the export shape (pip install onnx onnxruntime, the [onnx] extra, to make it dynamic)")
        return False
    model = onnx.load(path)
    try:
        make_text_dynamic(model)
    except OnnxRewriteError as e:
        log(f"text graph kept at the export shape: {e}")
        return False
    problem = check_text_dynamic(path, model)
    if problem:
        log(f"text graph kept at the export shape: the dynamic rewrite differs {problem}")
        return False
    onnx.save(model, path)
    return True


# ----------------------------------------------------------------------------------------------- image graph
def _graph_index(graph):
    """(producer of each tensor, consumers of each tensor, initializer values by name: only the 1x1 conv weights,
    biases and small constants, so that a 1.2 GB graph is not copied into numpy)."""
    from onnx import numpy_helper

    producer = {o: node for node in graph.node for o in node.output}
    consumers = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    inits = {
        t.name: numpy_helper.to_array(t)
        for t in graph.initializer
        if int(np.prod(t.dims)) <= _SMALL or (len(t.dims) == 4 and tuple(t.dims[2:]) == (1, 1))
    }
    return producer, consumers, inits


def _is_pointwise_conv(node, inits) -> bool:
    """A 1x1 convolution, stride 1, no padding, no groups, with constant weight [O, I, 1, 1] and bias [O]."""
    from onnx import helper

    if node is None or node.op_type != "Conv" or len(node.input) != 3:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    weight = inits.get(node.input[1])
    return (
        weight is not None
        and node.input[2] in inits
        and weight.ndim == 4
        and weight.shape[2:] == (1, 1)
        and attrs.get("group", 1) == 1
        and list(attrs.get("strides", [1, 1])) == [1, 1]
        and not any(attrs.get("pads", [0]))
        and list(attrs.get("dilations", [1, 1])) == [1, 1]
    )


def merge_head_convs(model) -> bool:
    """``head(out_conv(x))`` -> ``merged(x)``: the decoder ends with two 1x1 convs in a row, ``out_conv`` of the last
    fusion block and the ``head`` to the embedding width (the model runs the head before the last x2 upsampling,
    see ``LSegScratch``). Both are per-pixel linear maps, so they merge into one conv (``W = W_head W_out``,
    ``b = W_head b_out + b_head``, computed in float64): one pass over the pixels instead of two, and no
    intermediate tensor. Changes ``model`` in place; returns whether the pattern was found."""
    from onnx import numpy_helper

    graph = model.graph
    producer, consumers, inits = _graph_index(graph)
    for head in list(graph.node):
        if not _is_pointwise_conv(head, inits):
            continue
        conv = producer.get(head.input[0])
        if not _is_pointwise_conv(conv, inits) or len(consumers.get(conv.output[0], [])) != 1:
            continue
        w_head, b_head = inits[head.input[1]][:, :, 0, 0], inits[head.input[2]]
        w_out, b_out = inits[conv.input[1]][:, :, 0, 0], inits[conv.input[2]]
        if w_head.shape[1] != w_out.shape[0]:
            continue
        w = (w_head.astype(np.float64) @ w_out.astype(np.float64)).astype(np.float32)[:, :, None, None]
        b = (w_head.astype(np.float64) @ b_out.astype(np.float64) + b_head).astype(np.float32)
        conv.input[1], conv.input[2] = "lseg_head_merged_weight", "lseg_head_merged_bias"
        graph.initializer.extend([numpy_helper.from_array(w, conv.input[1]), numpy_helper.from_array(b, conv.input[2])])
        conv.output[0] = head.output[0]
        graph.node.remove(head)
        del graph.value_info[:]
        return True
    return False


def l2_norm_as_conv(model) -> bool:
    """The pixel L2 normalisation ``x / sqrt(ReduceSum(x * x, axis=1))`` with the channel sum as a 1x1 conv with a
    weight of ones: ONNX Runtime's ``ReduceSum`` over the channel axis of a ``[1, E, h, w]`` tensor is slow (strided),
    its convolution is not; same sum up to float32 rounding. Changes ``model`` in place; returns whether found."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producer, consumers, inits = _graph_index(graph)
    for node in list(graph.node):
        if node.op_type != "ReduceSum":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = list(attrs["axes"]) if "axes" in attrs else None  # an attribute before opset 13, an input since
        if len(node.input) > 1 and node.input[1] in inits:
            axes = list(inits[node.input[1]].ravel())
        if axes is None and len(node.input) > 1:
            const = producer.get(node.input[1])
            if const is not None and const.op_type == "Constant":
                axes = list(numpy_helper.to_array(const.attribute[0].t).ravel())
        if axes != [1] or attrs.get("keepdims", 1) != 1:
            continue
        square = producer.get(node.input[0])
        if square is None or square.op_type != "Mul" or square.input[0] != square.input[1]:
            continue
        channels = _channels(graph, producer, inits, square.input[0])
        if channels is None:
            continue
        ones = f"lseg_ones_{channels}"
        if ones not in inits:
            graph.initializer.append(numpy_helper.from_array(np.ones((1, channels, 1, 1), np.float32), ones))
        conv = helper.make_node("Conv", [square.output[0], ones], [node.output[0]], kernel_shape=[1, 1])
        index = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(index, conv)
        return True
    return False


def _channels(graph, producer, inits, name, depth: int = 4):
    """Channel count (axis 1) of tensor ``name`` when it is a conv's output, possibly through the resize matmuls
    (which keep the channel axis); None if unknown."""
    node = producer.get(name)
    if node is None or depth == 0:
        return None
    if node.op_type == "Conv" and node.input[1] in inits:
        return int(inits[node.input[1]].shape[0])
    if node.op_type == "MatMul":
        for i in node.input:
            found = _channels(graph, producer, inits, i, depth - 1)
            if found is not None:
                return found
    return None


def _scalar(producer, inits, name):
    """Value of a scalar constant (an initializer or a ``Constant``, possibly behind ``Cast`` nodes), else None."""
    from onnx import numpy_helper

    node = producer.get(name)
    while node is not None and node.op_type == "Cast":
        name, node = node.input[0], producer.get(node.input[0])
    if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
        value = numpy_helper.to_array(node.attribute[0].t)
    elif node is None and name in inits:
        value = inits[name]
    else:
        return None
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def _remove_dead_nodes(graph):
    """Drop the nodes none of whose outputs is used (iteratively), then the unused constants."""
    while True:
        used = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
        live = [node for node in graph.node if any(o in used for o in node.output)]
        if len(live) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(live)
    _prune(graph)


def erf_gelu(model) -> int:
    """Replace each ``PolyGELU`` of :mod:`~mindcv_lseg.deploy.onnx_compat` (the Erf-free exact GELU, ~25 elementwise
    nodes) by the canonical ``0.5 * x * (1 + Erf(x / sqrt 2))``, which ONNX Runtime fuses into one ``Gelu`` kernel
    (MindSpore 2.10's ONNX exporter has no ``Erf``, ONNX has). Found by its structure: ``Abs(x)``, ``Mul(|x|, 1/sqrt
    2)``, ``Add(x, Mul(|x|, .))``, ``Mul(., 0.5)``. Changes ``model`` in place; returns how many were replaced."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producer, consumers, inits = _graph_index(graph)
    names = {"sqrt2": "lseg_gelu_sqrt2", "one": "lseg_gelu_one", "half": "lseg_gelu_half"}
    replaced = 0
    for absolute in [node for node in graph.node if node.op_type == "Abs"]:
        x, ax = absolute.input[0], absolute.output[0]
        users = consumers.get(ax, [])
        scaled = [
            u
            for u in users
            if u.op_type == "Mul"
            and abs((_scalar(producer, inits, [i for i in u.input if i != ax][0]) or 0) - 0.7071068) < 1e-6
        ]
        if not scaled:
            continue
        add = None
        for mul in users:
            if mul.op_type != "Mul" or mul in scaled:
                continue
            for cand in consumers.get(mul.output[0], []):
                if cand.op_type == "Add" and set(cand.input) == {x, mul.output[0]}:
                    add = cand
        if add is None or len(consumers.get(add.output[0], [])) != 1:
            continue
        half = consumers[add.output[0]][0]
        other = [i for i in half.input if i != add.output[0]]
        if half.op_type != "Mul" or len(other) != 1 or _scalar(producer, inits, other[0]) != 0.5:
            continue
        out = half.output[0]
        tag = f"lseg_gelu{replaced}"
        new = [
            helper.make_node("Div", [x, names["sqrt2"]], [f"{tag}_div"]),
            helper.make_node("Erf", [f"{tag}_div"], [f"{tag}_erf"]),
            helper.make_node("Add", [f"{tag}_erf", names["one"]], [f"{tag}_add"]),
            helper.make_node("Mul", [x, f"{tag}_add"], [f"{tag}_mul"]),
            helper.make_node("Mul", [f"{tag}_mul", names["half"]], [out]),
        ]
        index = list(graph.node).index(half)
        graph.node.remove(half)
        for offset, node in enumerate(new):
            graph.node.insert(index + offset, node)
        replaced += 1
    if replaced:
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), names["sqrt2"]),
                numpy_helper.from_array(np.array(1.0, np.float32), names["one"]),
                numpy_helper.from_array(np.array(0.5, np.float32), names["half"]),
            ]
        )
        _remove_dead_nodes(graph)
    return replaced


def optimize_image_graph(path: str, log=print) -> list:
    """Apply :func:`merge_head_convs`, :func:`l2_norm_as_conv` and :func:`erf_gelu` to the ONNX image graph
    at ``path`` (in place). Returns the names of the rewrites applied ([] and the file untouched without the ``onnx`` package).
    """
    try:
        import onnx
    except ImportError:
        log("image graph not optimised (pip install onnx, the [onnx] extra)")
        return []
    model = onnx.load(path)
    done = [f.__name__ for f in (merge_head_convs, l2_norm_as_conv, erf_gelu) if f(model)]
    if done:
        _prune(model.graph)
        onnx.save(model, path)
    return done
