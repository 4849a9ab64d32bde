"""Monte Carlo sweeps: the accuracy of many programmed chip instances at several drift times,
run on Dask (a local cluster or an existing one) and written as resumable JSON.

    from cimc.montecarlo import sweep
    result = sweep("model.onnx", "test.npz", "pcm40", seeds=range(64), output="sweep.json")
    print(result)            # mean, std, min and 5th percentile per time
"""

from cimc.montecarlo.driver import DEFAULT_TIMES, parse_seeds, parse_times, sweep
from cimc.montecarlo.plot import check_plot, plot_sweep
from cimc.montecarlo.results import SweepResult

__all__ = ["DEFAULT_TIMES", "SweepResult", "check_plot", "parse_seeds", "parse_times",
           "plot_sweep", "sweep"]
