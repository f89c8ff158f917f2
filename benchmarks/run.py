"""The benchmark entry point: `.venv/bin/python -m benchmarks.run` from the repository.

Speed is reported as ratios against a floor measured in the same run on the same machine (these
machines are noisy; absolute times are printed only beside their floor).
"""

import argparse

from benchmarks import processor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--history",
        type=int,
        nargs=2,
        default=[10_000, 1_000_000],
        metavar=("SMALL", "LARGE"),
        help="historical dispatches for the planning figure (default 10000 1000000)",
    )
    parser.add_argument(
        "--planning-backends",
        default="sqlite",
        help="databases for the planning figure, comma-separated (postgresql: +4 min at 1M)",
    )
    args = parser.parse_args()

    print("== Processor ==")
    print("Planning pass, median of 30 (after the store's first), vs its three lookups in raw SQL")
    print(f"{'database':<12}{'history':>11}{'etl ms':>9}{'floor ms':>10}{'etl/floor':>11}")
    for backend in args.planning_backends.split(","):
        results = {n: processor.planning(backend, n) for n in args.history}
        for n, result in results.items():
            ratio = result["plan_ms"] / result["floor_ms"]
            print(
                f"{backend:<12}{n:>11,}{result['plan_ms']:>9.2f}{result['floor_ms']:>10.2f}"
                f"{ratio:>10.1f}x"
            )
        small, large = (results[n]["plan_ms"] for n in args.history)
        met = large < 10 and large / small < 2
        print(
            f"{backend:<12}{'':>11} large/small history: {large / small:.2f}x "
            f"(target < 10 ms and < 2x: {'met' if met else 'NOT met'})"
        )
    print()
    print("500-site dispatch: its start_time to the end of the last 200 ms handler call,")
    print("`etl run --every` waiting; floor = the pool's bound, ceil(500 / workers) x 200 ms")
    print(f"{'database':<12}{'etl s':>8}{'floor s':>9}{'etl/floor':>11}  target < 5 s")
    for backend in ("sqlite", "postgresql"):
        result = processor.curtail_latency(backend)
        verdict = "met" if result["latency_s"] < 5 and result["calls"] == 500 else "NOT met"
        print(
            f"{backend:<12}{result['latency_s']:>8.2f}{result['floor_s']:>9.2f}"
            f"{result['latency_s'] / result['floor_s']:>10.2f}x  {verdict}"
            f" ({result['calls']} calls, {result['workers']} workers)"
        )


if __name__ == "__main__":
    main()
