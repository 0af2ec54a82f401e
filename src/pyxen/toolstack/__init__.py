"""The toolstack (Xen's libxl): parses xl.cfg, builds domains, runs their life cycle."""


def one_line(text: str) -> str:
    """A daemon's message as one line (its non-empty lines joined with "; "). Here rather than
    in a submodule so that xl's commands, which all print with it, import nothing else."""
    return "; ".join(line for line in text.splitlines() if line.strip()) or text
