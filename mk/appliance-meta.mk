# The OpenNebula objects of the appliance (issue #15): the roles' VM templates
# (appliance/flower-*.tpl, generated from src/vars.rs), appliance/import.sh, and the marketplace
# metadata of the built disks. To have `make appliance` refresh the metadata, mk/qcow2.mk adds
# `appliance-meta: $(APPLIANCE)` (this file is read first: a prerequisite named here with
# $(APPLIANCE) would expand empty) and its `appliance` target may call `$(MAKE) appliance-meta`.

APPLIANCE_URL     ?= https://example.org/flower-init
APPLIANCE_VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)-flwr$(shell sed 's/.*==//' python/flwr-version.txt)
APPLIANCE_META    := $(OUT)/appliance/marketplace
APPLIANCE_DISKS    = $(wildcard $(OUT)/appliance/flower-*.qcow2)

.PHONY: appliance-meta appliance-templates appliance-objects-test

## appliance-meta   marketplace YAML of each built build/appliance/flower-*.qcow2 in build/appliance/marketplace/ (APPLIANCE_URL: where you publish the disks; ARCH=aarch64: build/aarch64/appliance's)
# The YAML is written by the build machine's own flower-init (x86_64), whatever ARCH the disks are.
appliance-meta: build
	@[ -n "$(APPLIANCE_DISKS)" ] || { echo "appliance-meta: no $(OUT)/appliance/flower-*.qcow2: run make appliance$(if $(filter x86_64,$(ARCH)),, ARCH=$(ARCH)) first"; exit 1; }
	$(if $(filter x86_64,$(ARCH)),,$(MAKE) --no-print-directory build ARCH=x86_64)
	appliance/meta.sh --arch $(ARCH) $(BUILD)/flower-init $(APPLIANCE_META) $(APPLIANCE_URL) $(APPLIANCE_VERSION) $(APPLIANCE_DISKS)

## appliance-templates rewrite appliance/flower-superlink.tpl and flower-supernode.tpl from src/vars.rs (review the diff!)
appliance-templates:
	FI_BLESS=1 cargo test --locked --lib oneflow::tests_vmtemplate::committed_vm_templates_are_the_generated_ones -- --exact

## appliance-objects-test VM templates through oned's parser and OneFlow, import.sh against fake CLIs, marketplace YAML of a small qcow2
appliance-objects-test: build
	cargo test --locked --lib -- oneflow::tests_vmtemplate oneflow::tests_import oneflow::template_syntax
	FLOWER_INIT=$(BUILD)/flower-init $(PYTHON) -m unittest tests/marketplace/test_meta.py
TEST_TARGETS += appliance-objects-test
