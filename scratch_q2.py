import numpy as np, warnings, sys
warnings.simplefilter("ignore")
import cimc.passes.quantize as Q
from cimc.frontend.onnx import import_onnx
from cimc.passes import run_pipeline, PassContext
from cimc.targets import load_target
from cimc.ir.printer import print_module
from cimc.ir.parser import parse_module
from cimc.ir.interpreter import run
import onnx
orig = Q.quantize_weights
def mse_q(w, L):
    if L <= 0: return orig(w, L)
    w = np.asarray(w, np.float32)
    peak = np.abs(w).max(axis=0)
    best = None
    for r in np.linspace(0.5, 1.0, 26):
        s = np.where(peak > 0, peak * r / L, 1).astype(np.float32)
        lv = np.clip(np.rint(w / s), -L, L)
        err = ((lv * s - w) ** 2).sum(axis=0)
        if best is None:
            best = (err, s.copy(), lv.copy())
        else:
            better = err < best[0]
            best[0][better] = err[better]; best[1][better] = s[better]; best[2][:, better] = lv[:, better]
    return best[2].astype(Q.level_dtype(L)), best[1]
z = np.load("examples/mnist/test.npz"); X = z["x"].astype(np.float32); Y = z["y"]
model = onnx.load("examples/mnist/model.onnx")
base = import_onnx(model, {"input": (200,1,28,28)})
run_pipeline(base, "canonicalize,lower-to-mvm,canonicalize")
text, res = print_module(base)
def acc(m):
    return np.mean([ (run(m, {"input": X[i:i+200]})["logits"].argmax(1) == Y[i:i+200]).mean() for i in range(200, 1000, 200)])
for mode in ["max", "mse"]:
    Q.quantize_weights = orig if mode == "max" else mse_q
    for tname in sys.argv[1:]:
      for dp in (99.99, 99.9):
        m = parse_module(text, res)
        ctx = PassContext(target=load_target(tname), calib={"input": X[:200]})
        run_pipeline(m, f"tile,quantize{{dac_percentile={dp}}}", ctx)
        print(mode, tname, dp, acc(m))
