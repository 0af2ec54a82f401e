# pyxen: two commands on a fresh Debian 12 machine, as root: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYXEN_ROOT ?= /var/lib/pyxen

# Debian packages pyxen runs on (checked with dpkg, installed when missing).
DEBS := python3-venv qemu-system-x86 qemu-utils busybox-static xenstore-utils lvm2 bridge-utils iproute2 openssh-server openssh-client dnsmasq-base openssl \
        debootstrap debian-installer-12-netboot-amd64 xorriso isolinux syslinux-common pxelinux tesseract-ocr e2fsprogs \
        libxen-dev gcc

.PHONY: run test stop deps image bench clean

run: deps image
	$(PY) -m pyxen.demo

# The suite in two runs, both always: tests/integration one test at a time (its hosts share the
# machine's bridges and TAP names), the rest on two pytest-xdist workers. Exit 5 (no test
# selected, e.g. by a -k that matches only the other run) is not a failure.
test: deps image
	@status=0; \
	$(PY) -m pytest $(PYTEST_ARGS) tests/integration || [ $$? = 5 ] || status=1; \
	$(PY) -m pytest -n 2 $(PYTEST_ARGS) --ignore=tests/integration || [ $$? = 5 ] || status=1; \
	exit $$status

stop:
	@if [ -x $(VENV)/bin/pyxen ]; then $(VENV)/bin/pyxen host stop; fi

deps: $(VENV)/.installed
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	@dpkg -s python3-venv >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -e '.[test]'
	@# byte-compile what pyxen and the tests import, not the 256 MB of collections ansible bundles
	@# (pip's own compile of them was half of this step)
	$(PY) -m compileall -q -j 0 -x '/ansible_collections/' "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" > /dev/null
	touch $@

image: deps
	$(PY) -m pyxen.images.demo

bench: deps image
	$(PY) bench/boot.py

clean: stop
	rm -rf $(VENV) src/*.egg-info
