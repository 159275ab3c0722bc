"""Execute ``notebooks/quickstart.ipynb`` headless (nbclient) and write it back with its outputs.

    python tools/execute_notebook.py            # make notebook: re-executes notebooks/quickstart.ipynb in place
    python tools/execute_notebook.py --out X.ipynb

The notebook writes into a fresh temporary folder (``QUICKSTART_DIR``); its printed paths are written as
``<repo>`` and ``<QUICKSTART_DIR>``, so the committed file shows no machine's folders. ``normalise`` is
also what ``tests/test_notebook.py`` applies before comparing a re-execution with the committed cells.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
# cells whose printed text depends on timings or floating-point summation order: only their output
# types are compared (cell metadata "tags": ["volatile-text"])
VOLATILE = "volatile-text"


def execute(path: Path = NOTEBOOK, work: Path | None = None):
    """The notebook at ``path`` executed (outputs in ``work``, a fresh temporary folder by default),
    normalised with :func:`normalise`; raises nbclient's CellExecutionError naming a failing cell."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="quickstart-") as tmp:
        work = Path(work or tmp).resolve()
        old = os.environ.get("QUICKSTART_DIR")
        os.environ["QUICKSTART_DIR"] = str(work)  # the kernel inherits it
        try:
            nbclient.NotebookClient(
                nb,
                timeout=900,
                kernel_name="python3",
                record_timing=False,
                resources={"metadata": {"path": str(path.parent)}},
            ).execute()
        finally:
            os.environ.pop("QUICKSTART_DIR") if old is None else os.environ.__setitem__("QUICKSTART_DIR", old)
        return normalise(nb, work)


def _text(s: str, work: Path) -> str:
    s = s.replace(str(work), "<QUICKSTART_DIR>").replace(str(ROOT), "<repo>")
    s = re.sub(r"0x[0-9a-f]{6,}", "0x…", s)  # memory addresses
    return s


def normalise(nb, work: Path):
    """``nb`` with the machine's folders replaced and execution counts numbered from 1 (in place)."""
    n = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        n += 1
        cell.execution_count = n
        cell.metadata.pop("execution", None)
        for o in cell.get("outputs", []):
            if "execution_count" in o:
                o["execution_count"] = n
            if o.get("output_type") == "stream":
                o["text"] = _text(o["text"], work)
            for key in ("text/plain",):
                if key in o.get("data", {}):
                    o["data"][key] = _text(o["data"][key], work)
    return nb


def _volatile(s: str) -> str:
    """The words of a text with every number (timings, dates, memory, float sums) as ``<n>``, progress-bar
    lines dropped (for cells tagged ``volatile-text``)."""
    lines = [
        ln for ln in s.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln and "\x1b" not in ln
    ]
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "<n>", "\n".join(lines))


def comparable(nb) -> list[dict]:
    """What must be the same in two executions: per cell its type, source, and outputs (type, stream name,
    mime types, the normalised text of deterministic cells)."""
    out = []
    for cell in copy.deepcopy(nb).cells:
        entry = {"type": cell.cell_type, "source": cell.source}
        if cell.cell_type == "code":
            volatile = VOLATILE in cell.metadata.get("tags", [])
            outs = []
            for o in cell.get("outputs", []):
                text = o.get("text") if o["output_type"] == "stream" else o.get("data", {}).get("text/plain")
                text = "".join(text) if isinstance(text, list) else text
                last = outs[-1] if outs else {}
                if (
                    o["output_type"] == "stream"
                    and last.get("output_type") == "stream"
                    and last["name"] == o["name"]
                ):
                    last["text"] += text  # the kernel may send one print as one or several stream messages
                    continue
                outs.append(
                    {
                        "output_type": o["output_type"],
                        "name": o.get("name"),
                        "mime": sorted(o.get("data", {})),
                        "text": text,
                    }
                )
            for o in outs if volatile else []:
                o["text"] = _volatile(o["text"]) if o["text"] else o["text"]
            entry["outputs"] = outs
        out.append(entry)
    return out


def main(argv=None) -> int:
    import nbformat

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=NOTEBOOK, help="where to write (default: in place)")
    args = ap.parse_args(argv)
    nb = execute(NOTEBOOK)
    nbformat.write(nb, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
