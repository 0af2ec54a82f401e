#!/usr/bin/env python3
"""Generate ``src/pyxen/xapi/datamodel.json`` from xapi's own machine-readable datamodel.

Inputs, both from xapi-project/xen-api: ``doc/data/xenapi.json`` (every class, field, message and
enum, as xapi's IDL prints them) and ``ocaml/idl/datamodel.ml`` plus ``datamodel_common.ml``
(``all_relations``: which ``ref set`` field mirrors which ``ref`` field, e.g. VM.VBDs <- VBD.VM;
xenapi.json does not carry it). The output keeps what the server needs and drops the prose, so
the 67 classes are never typed by hand. Run::

    python3 tools/gen_xapi_datamodel.py /path/to/xen-api-checkout-or-bare-git [revision]

A bare git directory is read with ``git show``; the revision defaults to HEAD.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "src" / "pyxen" / "xapi" / "datamodel.json"


def read(repo: Path, rev: str, path: str) -> str:
    if (repo / path).exists():
        return (repo / path).read_text()
    return subprocess.run(["git", "-C", str(repo), "show", f"{rev}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def relations(datamodel_ml: str, common_ml: str) -> list[list[str]]:
    """``all_relations`` as [[many_class, ref_field, one_class, set_field], ...]."""
    names = dict(re.findall(r'^let (_\w+) = "(\w+)"', common_ml, re.M))
    body = datamodel_ml[datamodel_ml.index("let all_relations"):]
    body = body[:body.index("\nlet ")]
    body = re.sub(r"\(\*.*?\*\)", "", body, flags=re.S)
    out = []
    for a, f, b, g in re.findall(r'\(\s*\(\s*(_\w+),\s*"(\w+)"\s*\)\s*,\s*\(\s*(_\w+),\s*"(\w+)"\s*\)\s*\)', body):
        out.append([names[a], f, names[b], g])
    return out


def sync_only(repo: Path, rev: str) -> list[str]:
    """Message names every ``call`` of ocaml/idl/datamodel*.ml declares without `Async in its
    ``~flags`` (the default is [`Session; `Async]): xapi serves no Async form of them.
    xenapi.json does not carry the flags. By name: a name declared both ways stays async."""
    names = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", rev, "ocaml/idl/"],
                           capture_output=True, text=True).stdout.split()
    if not names:
        names = [str(p.relative_to(repo)) for p in (repo / "ocaml" / "idl").glob("*.ml")]
    seen: dict[str, set[bool]] = {}
    for path in names:
        if not re.search(r"datamodel[^/]*\.ml$", path):
            continue
        src = re.sub(r"\(\*.*?\*\)", "", read(repo, rev, path), flags=re.S)
        for m in re.finditer(r"\bcall\b(.*?)\(\s*\)", src, re.S):
            name = re.search(r'~name:"(\w+)"', m.group(1))
            if name is None:
                continue
            flags = re.search(r"~flags:\[([^\]]*)\]", m.group(1))
            seen.setdefault(name.group(1), set()).add(flags is None or "Async" in flags.group(1))
    return sorted(n for n, kinds in seen.items() if kinds == {False})


def main(argv: list[str]) -> int:
    repo = Path(argv[1])
    rev = argv[2] if len(argv) > 2 else "HEAD"
    api = json.loads(read(repo, rev, "doc/data/xenapi.json"))
    rels = relations(read(repo, rev, "ocaml/idl/datamodel.ml"), read(repo, rev, "ocaml/idl/datamodel_common.ml"))
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", rev], capture_output=True, text=True).stdout.strip()
    classes: dict[str, Any] = {}
    enums: dict[str, list[str]] = {}
    for c in api:
        for e in c["enums"]:
            enums[e["name"]] = [v["name"] for v in e["values"]]
        classes[c["name"]] = {
            "state": c["lifecycle"]["state"],
            "fields": [[f["name"], f["type"], f["qualifier"], f.get("default"), f["lifecycle"]["state"]]
                       for f in c["fields"]],
            "messages": [[m["name"], [[p["type"], p["name"]] for p in m["params"]], m["result"][0],
                          [e["name"] for e in m["errors"]], m["implicit"], m["lifecycle"]["state"]]
                         for m in c["messages"]],
        }
    doc = {"source": f"xapi-project/xen-api {commit} doc/data/xenapi.json, ocaml/idl/datamodel.ml",
           "classes": classes, "enums": enums, "relations": rels, "sync_only": sync_only(repo, rev)}
    OUT.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"{OUT}: {len(classes)} classes, {sum(len(c['messages']) for c in classes.values())} messages, "
          f"{len(enums)} enums, {len(rels)} relations")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
