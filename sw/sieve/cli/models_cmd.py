"""``sieve models``: the zoo at a glance; ``--train NAME`` trains and caches a Fashion-MNIST
model, ``--eval NAME`` measures any model's validation and test accuracy."""

from __future__ import annotations

import json

from .data_args import add_data_arguments, data_options
from .device_args import add_device_arguments, device_options


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo; train (--train) or evaluate (--eval) a model")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--train", metavar="NAME", help="train and cache a Fashion-MNIST model (lenet5, convnet, minivgg, or all)")
    group.add_argument("--eval", metavar="MODEL", help="load a model (zoo name, net.onnx, package.module:factory or"
                       " file.py:ClassOrFactory, which runs that file) and print its val/test top-1 accuracy")
    p.add_argument("--data", help="dataset path (default: the model's default data); also an .npz of "
                                  "preprocessed x (N x C x H x W float32) and labels y")
    add_data_arguments(p)
    p.add_argument("--weights", help="weights file (default: the model's default weights)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_device_arguments(p)
    p.set_defaults(func=run)


def _fashion_record(name: str, data: str | None, dataset: str | None = None) -> dict | None:
    from .. import zoo

    if zoo.spec(name).family != "fashion":
        return None
    try:
        return zoo.fashion_record(name, data, dataset)
    except Exception:  # noqa: BLE001 - listing must work even when the Fashion data is missing
        return None


def run(args) -> int:
    from .. import zoo

    if args.train:
        names = ["lenet5", "convnet", "minivgg"] if args.train == "all" else [args.train]
        rows = []
        for name in names:
            if zoo.spec(name).family != "fashion":
                from ..errors import SieveError
                raise SieveError(f"{name} is pretrained, not trained here; --train accepts lenet5, convnet, minivgg or all")
            zoo.load(name, data=args.data, weights=None, **data_options(args))
            rows.append({"model": name, **(_fashion_record(name, args.data, args.dataset) or {})})
        if args.json:
            print(json.dumps(rows, indent=2))
        for row in rows if not args.json else []:
            print(f"{row['model']}: test accuracy {row.get('test_accuracy', float('nan')):.4f}, "
                  f"val accuracy {row.get('val_accuracy', float('nan')):.4f}, trained in {row.get('train_seconds', 0):.0f} s")
        return 0
    if args.eval:
        from ..model_source import load as load_source   # a zoo name, an ONNX file or a module of the user's

        loaded, dataset = load_source(args.eval, data=args.data, weights=args.weights, **data_options(args))
        model = loaded.model
        engine = device_options(args)
        val_acc, _ = zoo.evaluate(model, dataset.val, **engine)
        test_acc, _ = zoo.evaluate(model, dataset.test, **engine)
        result = {"model": args.eval, "dataset": dataset.name, "source": dataset.source,
                  "val_images": len(dataset.val), "test_images": len(dataset.test),
                  "val_accuracy": val_acc, "test_accuracy": test_acc, "input_shape": list(dataset.input_shape),
                  "preprocess": dataset.preprocess.to_json() if dataset.preprocess else None}
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"{args.eval} on {dataset.name} ({dataset.source}): val {val_acc:.4f} ({len(dataset.val)} images), "
                  f"test {test_acc:.4f} ({len(dataset.test)} images)")
        return 0
    rows = []
    for name in zoo.known_models():
        info = zoo.model_info(name)
        record = _fashion_record(name, args.data)
        rows.append({"model": name, "dataset": info["dataset"], "input_shape": list(info["input_shape"]),
                     "num_classes": info["num_classes"], "description": info["description"],
                     "test_accuracy": record.get("test_accuracy") if record else None,
                     "train_seconds": record.get("train_seconds") if record else None,
                     "weights_inputs": zoo.weights_input_shapes(name)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<14}{'dataset':<15}{'input':<12}{'test acc':<10}description")
    for row in rows:
        acc = f"{row['test_accuracy']:.4f}" if row["test_accuracy"] is not None else "-"
        shape = "x".join(str(v) for v in row["input_shape"])
        print(f"{row['model']:<14}{row['dataset']:<15}{shape:<12}{acc:<10}{row['description']}")
        for alt in row["weights_inputs"][1:]:   # weights that imply another input (Caffe: 227x227)
            alt_shape = "x".join(str(v) for v in alt["input_shape"])
            print(f"{'':<29}{alt_shape:<12}{'':<10}with {alt['weights']} ({alt['preprocess']} preprocessing)")
    return 0
