# The OpenNebula objects of the appliance (issue #15): the roles' VM templates
# (appliance/flower-*.tpl, generated from src/vars.rs), appliance/import.sh, and the marketplace
# metadata of the built disks. To have `make appliance` refresh the metadata, mk/qcow2.mk adds
# `appliance-meta: $(APPLIANCE)` (this file is read first: a prerequisite named here with
# $(APPLIANCE) would expand empty) and its `appliance` target may call `$(MAKE) appliance-meta`.

APPLIANCE_URL     ?= https://example.org/flower-init
APPLIANCE_VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)-flwr$(shell sed 's/.*==//' python/flwr-version.txt)
APPLIANCE_META    := $(BUILD)/appliance/marketplace
APPLIANCE_DISKS    = $(wildcard $(BUILD)/appliance/flower-*.qcow2)

.PHONY: appliance-meta appliance-templates appliance-objects-test

## appliance-meta   marketplace YAML of each built build/appliance/flower-*.qcow2 in build/appliance/marketplace/ (APPLIANCE_URL: where you publish the disks)
appliance-meta: build
	@[ -n "$(APPLIANCE_DISKS)" ] || { echo "appliance-meta: no build/appliance/flower-*.qcow2: run make appliance first"; exit 1; }
	appliance/meta.sh $(BUILD)/flower-init $(APPLIANCE_META) $(APPLIANCE_URL) $(APPLIANCE_VERSION) $(APPLIANCE_DISKS)

## appliance-templates rewrite appliance/flower-superlink.tpl and flower-supernode.tpl from src/vars.rs (review the diff!)
appliance-templates:
	FI_BLESS=1 cargo test --locked --lib oneflow::tests_vmtemplate::committed_vm_templates_are_the_generated_ones -- --exact

## appliance-objects-test VM templates through oned's parser and OneFlow, import.sh against fake CLIs, marketplace YAML of a small qcow2
appliance-objects-test: build
	cargo test --locked --lib -- oneflow::tests_vmtemplate oneflow::tests_import oneflow::template_syntax
	FLOWER_INIT=$(BUILD)/flower-init $(PYTHON) -m unittest tests/marketplace/test_meta.py
TEST_TARGETS += appliance-objects-test
