"""Command-line tools: xl/xm and pyxen. Each parses, asks the toolstack, then renders."""
