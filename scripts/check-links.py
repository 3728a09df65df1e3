#!/usr/bin/env python3
"""Every relative link in the repository's Markdown points at a file that exists and, with #anchor, at a
heading of that file (GitHub's anchor rules). Usage: scripts/check-links.py [root]; exits 1 on a broken link."""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
skip = {"build", "runs", "data", "node_modules", ".git", ".gpu-deps"}


def anchors(path):
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            text = m.group(1).strip().lower()
            text = re.sub(r"[^\w\- ]", "", text)
            out.add(text.replace(" ", "-"))
    return out


broken = []
for md in sorted(root.rglob("*.md")):
    if any(part in skip for part in md.relative_to(root).parts):
        continue
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (md.parent / file).resolve() if file else md
        if not dest.exists():
            broken.append(f"{md.relative_to(root)}: {target} (no such file)")
        elif not str(dest).startswith(str(root)):
            broken.append(f"{md.relative_to(root)}: {target} (outside the repository)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{md.relative_to(root)}: {target} (no heading #{anchor})")
for b in broken:
    print(b)
print(f"{len(broken)} broken links")
sys.exit(1 if broken else 0)
