"""`make bench`: every benchmark module's main(), in order. Figures are ratios against a
baseline measured in the same run, so they mean the same on a slower or busier machine."""

import importlib
import pkgutil
import sys
import time

import bench


def main() -> int:
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    only = sys.argv[1:]
    for name in names:
        if only and name.removeprefix("bench_") not in only and name not in only:
            continue
        print(f"\n##### {name}", flush=True)
        started = time.monotonic()
        importlib.import_module(f"bench.{name}").main()
        print(f"({name} took {time.monotonic() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
