#!/usr/bin/python3
"""The ONNX checker over files that nn wrote: onnx.checker.check_model with
full_check=True (which also runs strict shape inference) on each path given.
Prints one line per file; exits 1 if any file is refused, 2 when the onnx
package (Debian's python3-onnx) is missing, so the caller can skip."""
import sys

try:
    import onnx
except ImportError:
    print("onnx_check: the onnx Python package (python3-onnx) is not installed")
    sys.exit(2)

bad = 0
for path in sys.argv[1:]:
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        ops = sorted({n.op_type for n in model.graph.node})
        print(f"onnx_check: {path}: accepted (opset {model.opset_import[0].version}, "
              f"{len(model.graph.node)} nodes: {' '.join(ops)})")
    except Exception as e:  # the checker raises several types
        print(f"onnx_check: {path}: REFUSED: {e}")
        bad = 1
sys.exit(bad)
