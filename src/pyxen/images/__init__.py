"""Guest images pyxen builds from distribution packages (the demo guest)."""
