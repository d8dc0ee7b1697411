"""``sieve export`` (compressed ONNX of a searched model) and ``sieve inspect`` (what a file stores)."""

from __future__ import annotations

import json
from pathlib import Path

from .data_args import add_data_arguments, data_options


VARIANTS = ("accurate", "approximate", "exact")


def register(sub) -> None:
    p = sub.add_parser("export", help="write a compressed ONNX file (packed weights, rounded activations)")
    p.add_argument("--model", required=True,
                   help="zoo model name (lenet5, resnet20 ...), an ONNX file (net.onnx), package.module:factory or"
                        " path/file.py:ClassOrFactory (importing a .py file runs that code)")
    p.add_argument("--input-shape", metavar="C,H,W",
                   help="image shape for a model whose file or plan does not give it (e.g. 3,224,224)")
    p.add_argument("--plan", help="plan.json from `sieve search` (default build/search/MODEL/plan.json)")
    p.add_argument("--variant", default="accurate", choices=VARIANTS, help="which plan variant (default accurate)")
    p.add_argument("--out", required=True, help="output .onnx file")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fp32", action="store_true", help="the uncompressed fp32 reference (plan ignored)")
    mode.add_argument("--weights-only", action="store_true", help="packed weights, activations left in fp32")
    p.add_argument("--data", help="dataset path for the model (default: the model's default)")
    add_data_arguments(p)
    p.add_argument("--weights", help="weights file for the model (default: the model's default)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_export)

    q = sub.add_parser("inspect", help="list the compressed tensors of a SIEVE ONNX file")
    q.add_argument("file", help="an .onnx file written by `sieve export`")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.add_argument("--profile", action="store_true",
                   help="also time the file in onnxruntime (1 thread) and list kernel time per operator type")
    q.add_argument("--batch", type=int, default=1, help="batch size for --profile (default 1)")
    q.add_argument("--runs", type=int, default=10, help="timed inference calls for --profile (default 10)")
    q.set_defaults(func=run_inspect)


def run_export(args) -> int:
    from .. import zoo
    from ..export.exporter import export_onnx
    from ..export.preflight import check_export_request, export_input_shape
    from ..model_source import parse_input_shape, source_kind, source_name

    mode = "fp32" if args.fp32 else "weights-only" if args.weights_only else "full"
    plan_path = None if mode == "fp32" else Path(args.plan or f"build/search/{source_name(args.model)}/plan.json")
    if source_kind(args.model) != "zoo":   # an ONNX file or a PyTorch module of the user's
        from ..export.from_source import export_source

        result = export_source(args.model, args.out, plan_path, args.variant, mode, weights=args.weights,
                               input_shape=parse_input_shape(args.input_shape))
    else:
        # everything cheap (model name, --out, plan file, variant, plan vs the model's layers)
        # before the load, which may read a data set and train a pool model for minutes
        plan, elements = check_export_request(args.model, args.out, plan_path, args.variant)
        model, data = zoo.load(args.model, data=args.data, weights=args.weights, val=1, test=1,
                               **data_options(args))
        shape = export_input_shape(plan_path, data, args.model)   # the plan's (what was searched), else the data's
        result = export_onnx(model, plan, args.out, shape, mode=mode, model_name=args.model,
                             variant=args.variant if mode != "fp32" else "", elements=elements, progress=True)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    weights = [t for t in result.tensors if t.kind == "weight"]
    acts = [t for t in result.tensors if t.kind == "activation"]
    stored = sum(t.bytes_stored for t in weights)
    fp32 = sum(t.bytes_fp32 for t in weights)
    print(f"wrote {result.path}: {result.file_bytes:,} bytes, opset {result.opset}, mode {mode}")
    if weights:
        print(f"  {len(weights)} packed weights: {stored:,} bytes stored vs {fp32:,} as fp32 ({fp32 / stored:.2f}x)")
    if acts:
        print(f"  {len(acts)} activations rounded in the graph")
    return 0


def run_inspect(args) -> int:
    from ..export.inspect import format_table, inspect_onnx

    info = inspect_onnx(args.file)
    if args.profile:
        from ..export.profile import op_times

        info["profile"] = op_times(args.file, batch=args.batch, runs=args.runs)
    print(json.dumps(info, indent=2) if args.json else format_table(info))
    if args.profile and not args.json:
        print(_profile_table(info["profile"]))
    return 0


def _profile_table(prof: dict) -> str:
    lines = [f"\nonnxruntime kernel time, batch {prof['batch']}, {prof['threads']} thread, mean of "
             f"{prof['runs']} calls: {prof['run_ms']:.3f} ms per call",
             f"{'operator':<22}{'calls':>7}{'ms':>10}{'share':>8}"]
    lines += [f"{o['op']:<22}{o['calls']:>7g}{o['ms']:>10.3f}{o['share']:>8.1%}" for o in prof["ops"]]
    return "\n".join(lines)


__all__ = ["register", "run_export", "run_inspect"]
