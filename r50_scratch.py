import sys, time, warnings
sys.path.insert(0, "tests/e2e")
warnings.simplefilter("ignore")
import numpy as np
from light_models import light_model, light_inputs
from cimc.compiler import compile
from cimc.passes.base import TimePasses
name = sys.argv[1] if len(sys.argv) > 1 else "resnet50"
target = sys.argv[2] if len(sys.argv) > 2 else "hermes64"
m = light_model(name); m.ir_version = max(m.ir_version, 4)
t = time.perf_counter()
tp = TimePasses()
r = compile(m, target, f"/tmp/{name}_{target}.cimc", instruments=[tp])
print("total", time.perf_counter() - t)
print({k: v for k, v in r.reports["place"].items()}, r.reports["tile"]["analytic_min"], r.reports["schedule"]["transfers"], r.reports["schedule"]["chip_transfers"])
