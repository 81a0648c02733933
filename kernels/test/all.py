"""Every kernel family's tests (test_<family>.py) with one build of the kernels, as
scripts/gpu-check.sh runs them on the GPU machine.
Usage: python3 kernels/test/all.py [--arch 90] [--only sampling,sgmv,...]"""
import argparse, importlib
import torch
import harness


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="90")
    ap.add_argument("--only", help="comma-separated families: " + ",".join(harness.FAMILIES))
    a = ap.parse_args()
    only = a.only.split(",") if a.only else harness.FAMILIES
    unknown = [f for f in only if f not in harness.FAMILIES]
    if unknown:
        ap.error(f"unknown families {unknown}; there are {harness.FAMILIES}")
    lib = harness.build(a.arch)
    for family in only:
        torch.manual_seed(0)
        print(f"[{family}]", flush=True)
        importlib.import_module(f"test_{family}").run_family(lib)
    harness.finish()


if __name__ == "__main__":
    main()
