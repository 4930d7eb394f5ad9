# The Debian package for images that keep systemd (issue #15): flower-init + flower-init.service,
# built without root (dpkg-deb --root-owner-group). docs/deb.md.

DEB_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DEB         := $(BUILD)/flower-init_$(DEB_VERSION)_amd64.deb

.PHONY: deb deb-test
## deb              build/flower-init_VERSION_amd64.deb: the static binary and a systemd unit running `flower-init boot`
deb: build
	packaging/deb/build.sh $(BUILD)/flower-init $(DEB_VERSION) $(DEB)

## deb-test         the .deb's control data and contents, installed into a scratch root, the unit through systemd-analyze verify
deb-test: deb
	DEB=$(DEB) $(PYTHON) -m unittest tests/deb/test_deb.py
TEST_TARGETS += deb-test
