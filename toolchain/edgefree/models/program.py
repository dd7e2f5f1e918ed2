"""A ``torch.export`` program (``.pt2``) as a teacher: no Python code of the model is needed.

An exported program's BatchNorm layers are function calls on buffers, which forward hooks
cannot reach, and ``torch.export.unflatten`` gives interpreter modules, not ``nn.BatchNorm2d``.
So the program's graph is rewritten: every convolution, linear layer and batch norm whose
weights are the program's own becomes a call of a real ``nn.Conv1d/2d``, ``nn.Linear`` or
``nn.BatchNorm1d/2d`` holding them, under the name of the layer it was exported from (so the
state_dict keys stay the original model's). Everything else stays as the graph computes it.
DeepInversion's hooks, pruning, refit and distillation then see the layers they work on.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import fx, nn

from edgefree.errors import CheckpointError, NoBatchNormError, warn
from edgefree.models.archive import read_program

aten = torch.ops.aten
_CONV = {aten.conv1d.default, aten.conv2d.default, aten.conv1d.padding, aten.conv2d.padding}
_BATCH_NORM = {aten.batch_norm.default: (6, 7),  # (index of momentum, of eps) in the call's arguments
               aten._native_batch_norm_legit_no_training.default: (5, 6)}
_CONV_MODULES = {3: nn.Conv1d, 4: nn.Conv2d}
_BN_MODULES = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}


def _tensor(gm: fx.GraphModule, node) -> torch.Tensor | None:
    if node is None:
        return None
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        raise LookupError("not one of the program's own tensors")
    return gm.get_parameter(node.target) if node.target in dict(gm.named_parameters()) else gm.get_buffer(node.target)


def _conv(gm, args: list) -> nn.Module:
    weight, bias = _tensor(gm, args[1]), _tensor(gm, args[2] if len(args) > 2 else None)
    stride, padding, dilation, groups = (list(args[3:7]) + [1, 0, 1, 1][len(args[3:7]):])[:4]
    conv = _CONV_MODULES[weight.dim()](weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride,
                                       padding, dilation, groups, bias=bias is not None)
    return _with_weights(conv, weight, bias)


def _convolution(gm, args: list) -> nn.Module:
    """``aten.convolution`` (a decomposed program): input, weight, bias, stride, padding, dilation, transposed, ..."""
    if args[6]:
        raise LookupError("transposed convolution")
    return _conv(gm, [*args[:6], args[8]])


def _linear(gm, args: list) -> nn.Module:
    weight, bias = _tensor(gm, args[1]), _tensor(gm, args[2] if len(args) > 2 else None)
    return _with_weights(nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None), weight, bias)


def _with_weights(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    module.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        module.bias = nn.Parameter(bias.detach().clone())
    return module


def _batch_norm(gm, node: fx.Node) -> nn.Module:
    args = list(node.args)
    weight, bias, mean, var = (_tensor(gm, a) for a in args[1:5])
    momentum, eps = (args[i] for i in _BATCH_NORM[node.target])
    value = node.meta["val"]
    rank = (value[0] if isinstance(value, (tuple, list)) else value).dim()
    bn = _BN_MODULES[rank](mean.numel(), eps=eps, momentum=momentum, affine=weight is not None)
    with torch.no_grad():
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        if weight is not None:
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
    return bn


def _layer_of(node: fx.Node, gm) -> tuple[nn.Module, str] | None:
    """The real layer for a call node and the name it takes (its weight's owner), or None for a node of
    another kind. Raises LookupError, KeyError, TypeError or IndexError for a layer whose weight is shared,
    computed or unusual (the caller leaves it as a graph operation, and says so)."""
    if node.op != "call_function":
        return None
    if node.target in _CONV:
        module = _conv(gm, list(node.args))
    elif node.target == aten.convolution.default:
        module = _convolution(gm, list(node.args))
    elif node.target == aten.linear.default:
        module = _linear(gm, list(node.args))
    elif node.target in _BATCH_NORM:
        module = _batch_norm(gm, node)
        return module, node.args[3].target.rpartition(".")[0]  # the running mean's owner: weight may be None
    else:
        return None
    return module, node.args[1].target.rpartition(".")[0]


def _static_batch(gm: fx.GraphModule) -> int | None:
    """The batch size the program was exported for, when it is fixed (None: a dynamic batch)."""
    value = next(n for n in gm.graph.nodes if n.op == "placeholder").meta.get("val")
    size = getattr(value, "shape", (None,))[0]
    return size if isinstance(size, int) else None


def program_input_shape(program) -> tuple[int, ...] | None:
    """The input shape (without the batch) the program was exported with, where it is fixed."""
    user_input = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == user_input)
    shape = tuple(node.meta["val"].shape[1:])
    return shape if all(isinstance(d, int) for d in shape) else None


def _what_file(path: Path) -> str:
    """What a file that torch.export cannot load holds, as far as its zip listing says."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "not a zip archive"
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "a torch.save file, such as a state_dict, not a program; a state_dict takes --arch and a .pt name"
    return "a zip archive without a program's parts"


def load_program(path: str | Path, name_left: bool = False) -> tuple[nn.Module, tuple[int, ...] | None]:
    """The program saved at ``path`` as an ``nn.Module`` with real layers (eval mode), and its input shape.
    ``name_left``: one warning names the layers that stay graph operations (a teacher's, which the stages
    work on).

    Raises ``CheckpointError`` for a file that is no program or one exported with a fixed batch
    size, ``NoBatchNormError`` for a program without BatchNorm layers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"program {path} {'is a folder' if path.is_dir() else 'does not exist'}: pass the .pt2 "
                              "file saved with torch.export.save")
    try:
        program = read_program(path)  # nothing the file carries runs (edgefree.models.archive)
    except CheckpointError as exc:
        kind = _what_file(path)
        if kind.startswith("a torch.save file"):  # the reader's own words name a missing part: say what it is
            raise CheckpointError(f"{path} is {kind}") from exc
        raise
    if len(program.graph_signature.user_inputs) != 1:
        raise CheckpointError(f"program {path} takes {len(program.graph_signature.user_inputs)} inputs; edgefree "
                              "needs a classifier of one input tensor: export it with one example input")
    gm = program.module()
    batch = _static_batch(gm)
    if batch is not None:
        raise CheckpointError(
            f"program {path} was exported for a fixed batch of {batch}, and synthesis runs batches of many: export "
            "it with a dynamic batch, torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))")
    graph = gm.graph
    left = []  # layers whose weights cannot be taken out of the graph
    for node in list(graph.nodes):
        try:
            found = _layer_of(node, gm)
        except (LookupError, KeyError, TypeError, IndexError):
            left.append(node.name)
            continue
        if found is None:
            continue
        module, name = found
        parent, _, child = name.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, child, module)
        with graph.inserting_before(node):
            call = graph.call_module(name, (node.args[0],))
        if node.target == aten._native_batch_norm_legit_no_training.default:  # a tuple: (output, stats...)
            for use in list(node.users):
                if use.args[1] == 0:
                    use.replace_all_uses_with(call)
                graph.erase_node(use)
        else:
            node.replace_all_uses_with(call)
        graph.erase_node(node)
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            # the exported input constraints (the batch's range, say) would bind every later export of the
            # student to them; a wrong input shape still fails in the layers
            graph.erase_node(node)
    for node in graph.nodes:
        node.meta.clear()  # fake tensors from tracing: they cannot be copied, and nothing reads them now
    graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    # a plain GraphModule: the exported one refuses train() and eval(), which distillation calls
    module = fx.GraphModule(gm, graph).eval()
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        raise NoBatchNormError(
            f"program {path} has no BatchNorm layers (or they were folded into its convolutions): DeepInversion "
            "matches the running statistics BatchNorm stores; export the model before folding, with its BatchNorm")
    if left and name_left:
        warn(f"program {path}: {len(left)} layer(s) stay graph operations (a weight shared or computed in the "
             f"graph, a transposed convolution) "
             f"({', '.join(left[:4])}{', ...' if len(left) > 4 else ''}): synthesis does not match the statistics of "
             "such a BatchNorm, and pruning and the refit leave such a convolution or linear layer as it is")
    return module, program_input_shape(program)
