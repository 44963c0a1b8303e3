"""Math-Verify 0.9.0 on the verifier cases, the way SIREN used it: verify(parse(gold), parse(pred)).

Prints one JSON object: per-file agreement with the `expected` labels, false positives, and
per-answer latency (parse of both sides + verify) as answers/s, p50 and p99, on whatever CPU it is
pinned to (run it under `taskset -c 0`).

    python3 bench/math_verify_baseline.py tests/cases
"""
import glob, json, os, sys, time

from math_verify import parse, verify


def main(folder):
    per_file, latencies, fp = {}, [], 0
    for path in sorted(glob.glob(os.path.join(folder, "*.jsonl"))):
        name = os.path.basename(path)
        agree = total = 0
        for line in open(path):
            case = json.loads(line)
            start = time.perf_counter()
            try:
                correct = bool(verify(parse(case["gold"]), parse(case["pred"])))
            except Exception:
                correct = False
            latencies.append(time.perf_counter() - start)
            agree += correct == case["expected"]
            fp += correct and not case["expected"]
            total += 1
        per_file[name] = [agree, total]
    latencies.sort()
    n = len(latencies)
    print(json.dumps({
        "verifier": "math-verify 0.9.0",
        "per_file": per_file,
        "false_positives": fp,
        "answers_per_s": n / sum(latencies),
        "p50_ms": 1e3 * latencies[n // 2],
        "p99_ms": 1e3 * latencies[min(n - 1, int(0.99 * n))],
    }))


if __name__ == "__main__":
    main(sys.argv[1])
