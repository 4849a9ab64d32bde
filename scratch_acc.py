import numpy as np, warnings, sys
warnings.simplefilter("ignore")
import cimc, onnx
from cimc.testing import ort_run
z = np.load("examples/mnist/test.npz"); X = z["x"].astype(np.float32); Y = z["y"]
xc, xt, yt = X[:200], X[200:], Y[200:]
ref = ort_run(onnx.load("examples/mnist/model.onnx"), {"input": xt})["logits"]
print("fp32", (ref.argmax(1) == yt).mean())
extra = sys.argv[1] if len(sys.argv) > 1 else ""
for t in (sys.argv[2].split(",") if len(sys.argv) > 2 else ["pcm40", "hermes64", "neurram48"]):
    pipe = None
    if extra:
        from cimc.passes.pipelines import LOWERING
        pipe = LOWERING + ",tile," + extra + ",place,schedule"
    cimc.compile("examples/mnist/model.onnx", t, f"/tmp/acc_{t}.cimc", input_shapes={"input": (1,1,28,28)}, calib={"input": xc}, pipeline=pipe)
    accs = []
    for seed in range(3):
        chip = cimc.load(f"/tmp/acc_{t}.cimc", seed=seed)
        a0 = (chip.run({"input": xt})["logits"].argmax(1) == yt).mean()
        a1 = (chip.run({"input": xt}, t=86400.0)["logits"].argmax(1) == yt).mean()
        accs.append((a0, a1))
    print(t, np.mean(accs, axis=0), accs)
