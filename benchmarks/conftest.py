import torch

from .common import MODE, THREADS


def pytest_configure(config):
    # Smoke mode (the default, run by the test command) calls each case once with
    # tiny sizes: it checks the suite runs, it measures nothing.
    if MODE == "smoke" and hasattr(config.option, "benchmark_disable"):
        config.option.benchmark_disable = True
    if THREADS:
        torch.set_num_threads(THREADS)
