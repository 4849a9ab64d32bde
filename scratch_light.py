import sys, time, warnings
sys.path.insert(0, "tests/e2e")
warnings.simplefilter("ignore")
import numpy as np
from light_models import light_model, light_inputs, LIGHT_MODELS
from cimc.testing import ort_run
import cimc
for name in (sys.argv[1:] or LIGHT_MODELS):
    m = light_model(name)
    x = light_inputs(name)
    want = ort_run(m, x)
    t = time.perf_counter()
    r = cimc.compile(m, "ideal", f"/tmp/light_{name}.cimc")
    tc = time.perf_counter() - t
    chip = cimc.load(f"/tmp/light_{name}.cimc")
    t = time.perf_counter()
    got = chip.run(x)
    tr = time.perf_counter() - t
    errs = []
    for k in want:
        w, g = want[k], got[k]
        ok = np.allclose(g, w, rtol=1e-4, atol=1e-5)
        errs.append((k, ok, float(np.abs(g - w).max())))
    print(name, f"compile {tc:.1f}s run {tr:.2f}s", r.reports["place"]["crossbars"], r.reports["place"]["analytic_min"], errs, flush=True)
