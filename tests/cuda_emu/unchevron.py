#!/usr/bin/env python3
"""unchevron.py IN OUT — rewrites a .cu file's kernel launches for the CUDA emulator (emu.h):
`kernel<T, K><<<grid, block, smem, stream>>>(args)` becomes
`mf_emu::launch("kernel<T, K>", kernel<T, K>, grid, block, smem, stream)(args)`; nothing else changes, and a
#line directive keeps compiler messages pointing at the original file and lines."""
import re
import sys

LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:\s*<[^<>;()]*>)?)\s*<<<(.*?)>>>", re.S)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    text = open(src).read()
    n = [0]

    def sub(m):
        n[0] += 1
        # keep the line count: the newlines inside the match move after it
        # (inside a macro, as backslash-newlines)
        nl = "\\\n" if "\\\n" in m.group(0) else "\n"
        gap = nl * m.group(0).count("\n")
        cfg = " ".join(m.group(2).split())
        name = m.group(1).strip()
        return 'mf_emu::launch("%s", %s, %s)%s' % (" ".join(name.split()), name, cfg, gap)

    out = LAUNCH.sub(sub, text)
    if "<<<" in out or ">>>" in out:
        sys.exit("unchevron.py: %s: a launch it could not rewrite" % src)
    with open(dst, "w") as f:
        f.write('#line 1 "%s"\n' % src)
        f.write(out)


if __name__ == "__main__":
    main()
