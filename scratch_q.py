import numpy as np, warnings, sys
warnings.simplefilter("ignore")
from cimc.frontend.onnx import import_onnx
from cimc.passes import run_pipeline, PassContext
from cimc.targets import load_target
from cimc.ir.printer import print_module
from cimc.ir.parser import parse_module
from cimc.ir.interpreter import run
import onnx
z = np.load("examples/mnist/test.npz"); X = z["x"].astype(np.float32); Y = z["y"]
model = onnx.load("examples/mnist/model.onnx")
base = import_onnx(model, {"input": (200,1,28,28)})
run_pipeline(base, "canonicalize,lower-to-mvm,canonicalize")
text, res = print_module(base)
def acc(m):
    return np.mean([ (run(m, {"input": X[i:i+200]})["logits"].argmax(1) == Y[i:i+200]).mean() for i in range(200, 1000, 200)])
print("fp32", acc(base))
for tname in sys.argv[1:]:
    for dp, ap in [(99.99, 99.99), (99.9, 99.99), (99.9, 99.9), (100.0, 100.0), (99.5, 99.9), (99.0, 99.5)]:
        m = parse_module(text, res)
        ctx = PassContext(target=load_target(tname), calib={"input": X[:200]})
        run_pipeline(m, f"tile,quantize{{dac_percentile={dp},adc_percentile={ap}}}", ctx)
        print(tname, dp, ap, acc(m))
