"""The toolstack (Xen's libxl): parses xl.cfg, builds domains, runs their life cycle."""
