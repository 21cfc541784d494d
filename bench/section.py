#!/usr/bin/python3
"""section.py — replaces one named section of bench/RESULTS.md with standard input, leaving the
other sections alone, so that each benchmark script (run.sh: matmul and elementwise; mnist.py: the
MNIST programs) refreshes only its own results. A section runs from `<!-- NAME:begin -->` to
`<!-- NAME:end -->`; a missing one is appended.

    producer | /usr/bin/python3 bench/section.py bench/RESULTS.md NAME
"""
import os
import sys


def replace(text, name, body):
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1].lstrip("\n")
    return (text.rstrip() + "\n\n" if text.strip() else "") + block


def main():
    path, name = sys.argv[1], sys.argv[2]
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(replace(text, name, sys.stdin.read()))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
